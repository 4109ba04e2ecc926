"""Guided screening with standard instruments (PHQ-9, GAD-7 in config/instruments.yaml).

- `screening`: instruments, answer scoring (rules, optional model) and the screening state machine.
- `rules`: the rule-based answer scorer (frequency words, day counts -> 0-3).
`from mvp import assessment` gives the public API of `screening`.
"""
from mvp.assessment.screening import *  # noqa: F401,F403 - the package's public API
