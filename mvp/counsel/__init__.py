"""The counselling domain: treatment stages (config/stages.yaml, with goals and exit signals), the
bundled sample client cases, session memory (the 会谈摘要 that stands in for dropped turns: memory.py)
and stage progress (when to suggest the next stage: progress.py). Pure Python: no store, no UI."""
