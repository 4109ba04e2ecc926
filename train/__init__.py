"""Training: export from feedback.db, PT/SFT/RM/DPO/RL stages, evaluation and the one-command pipeline.

Every stage is a module (`python -m train.sft --config FILE`) registered in `train.registry`, whose
`run_stage` is the one skeleton they share; `train.config`, `train.data`, `train.outputs` and
`train.training` hold what the stages have in common. `python -m train.pipeline` runs them in a row,
`python -m train.export` makes their data, `python -m train.agreement` says whether the raters agree,
`python -m train.demo` builds the offline demo model.
See docs/training.md for the loop (app -> export -> stages -> evaluate -> register -> serve).
"""
