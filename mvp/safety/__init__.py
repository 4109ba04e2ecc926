"""Safety: crisis detection on client messages, screening of model replies, crisis resources, privacy.

- `rules`: loads and validates config/safety_rules.yaml; text normalisation.
- `detect`: the rule layer, the optional model check, reply screening, resources, the CLI.
- `privacy`: scrubbing of personal data with typed placeholders.
`from mvp import safety` gives the public API of `detect` (detect, screen_reply, safety_message ...).
"""
from mvp.safety.detect import *  # noqa: F401,F403 - the package's public API
from mvp.safety.detect import CATEGORY_NAMES, CRISIS_INSTRUCTION, MODEL_CHECK_MAX_NEW_TOKENS  # noqa: F401
