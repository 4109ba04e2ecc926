"""The offline demo model build: `python -m train.demo` trains models/demo/ from the bundled dialogues.

- `tiny_lm`: small Qwen2-architecture models and a Qwen2-pipeline tokenizer trained on local text
  (also the test fixtures' models).
- `dialogues`: the held-out split, the system prompts, whole-turn windows, held-out perplexity.
- `build`: the bounded-time build (settings, trainer with the shared wall-clock stop, install, CLI);
  `card`: the model card, generation defaults and versions it writes; `threads`: the thread tuner.
The runtime only needs `mvp.model.demo` (the folder and the "is it built" check).
"""
