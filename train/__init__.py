"""Training: export from feedback.db, PT/SFT/RM/RL/DPO stages, evaluation and the one-command pipeline.

See docs/training.md for the loop (app -> export -> stages -> evaluate -> register -> serve).
"""
