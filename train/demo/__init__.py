"""The offline demo model build: `python -m train.demo` trains models/demo/ from the bundled dialogues.

- `tiny_lm`: small Qwen2-architecture models and a Qwen2-pipeline tokenizer trained on local text
  (also the test fixtures' models).
- `build`: the bounded-time build of the demo model, its model card and build_info.json.
The runtime only needs `mvp.model.demo` (the folder and the "is it built" check).
"""
