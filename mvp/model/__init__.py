"""The model runtime: load a model, build prompts, generate; knows nothing of the app, store or train/.

- `loader`: ONE loader (demo, local folder or hub id, optional LoRA adapter, 4-bit/8-bit/none).
- `dialogue`: prompt formats (chat template, BianQue/SoulChat plain text) and the context budget
  (whole old turns dropped, pinned notes and a session summary kept, the first visible turn reported).
- `engine`: streaming in-process generation (`Engine.start` / `Engine.generate`).
- `openai_backend`: the same interface over an OpenAI-compatible server (vLLM, `transformers serve`);
  `served_tokens` counts its tokens, `openai_errors` explains its failures, `remote_generation`
  is a reply that a cancel stops at once.
- `local_server`: `transformers serve` on loopback (`LocalServer`, `free_port`) for tests and benchmarks.
- `factory`: the one place that turns settings into an engine, used by every caller.
- `demo`: where the built-in demo model lives and whether it is built.
"""
