"""Safety: crisis detection on client messages, screening of model replies, crisis resources, privacy.

- `rules`: loads and validates config/safety_rules.yaml (the one list of crisis categories lives
  there, in `category_info`); `normalise`: disguised spellings -> one spelling.
- `detect`: the rule layer (`RuleSet`), layered `detect` (rules + classifier, fail safe; optional
  `context` = earlier client turns), `combine`. `scan`: the trigger-window prefilter of long texts.
- `classifier`: the learned char n-gram classifier, built from shipped data on first use
  (`thresholds`: its bars, chosen out of fold on training data).
- `model_check`: the optional check through the serving engine.
- `screen`: reply screening (patterns + the learned `reply_model`) and `ReplyStream` (streams a reply
  only through the screen).
- `resources`: hotlines and the safety message. `data`, `evaluate`, `cli`: labelled data, figures, CLI.
- `privacy`: scrubbing of personal data with typed placeholders.
`from mvp import safety` gives the public API (detect, screen_reply, safety_message, ReplyStream ...).
"""
from mvp.safety.detect import (  # noqa: F401 - the package's public API
    CATEGORIES, CATEGORY_NAMES, CONTEXT_TURNS, CRISIS_INSTRUCTION, DEFAULT_RULES_PATH, MASK, CategoryInfo, Detection, RuleSet,
    SafetyConfigError, SafetyError, combine, context_risk, default_ruleset, detect, fail_safe, normalise, ordered, screen_reply,
)
from mvp.safety.model_check import (  # noqa: F401
    MODEL_CHECK_MAX_NEW_TOKENS, MODEL_CHECK_TIMEOUT_S, model_check, model_check_bounded, model_check_prompt,
    parse_model_answer,
)
from mvp.safety.resources import (  # noqa: F401
    DEFAULT_RESOURCES_PATH, CrisisResources, Resource, default_resources, load_resources, safety_message,
)
from mvp.safety.screen import MAX_EVIDENCE, MAX_EVIDENCE_SPAN, ReplyScreen, ReplyStream  # noqa: F401
from mvp.safety.cli import main, read_messages  # noqa: F401
