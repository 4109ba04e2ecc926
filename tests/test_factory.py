"""The one engine factory: the primary and the arena's opponents share prompt format and budget."""
from __future__ import annotations

import pytest

from mvp.model.dialogue import PlainFormat
from mvp.model.factory import EngineSettings, build_engine
from mvp.model.loader import ModelLoadError


def test_arena_opponent_keeps_the_primary_prompt_format(tiny_model_dir):
    import app
    from mvp.app.config import load_config

    config = load_config(["--model", str(tiny_model_dir), "--prompt-format", "plain", "--user-label", "来访者",
                          "--assistant-label", "咨询师", "--max-context-tokens", "300", "--quantization", "none"])
    primary = app.build_engine(config)
    opponent = app.version_loader(config)({"id": 2, "base_model": str(tiny_model_dir), "adapter": None,
                                           "quantization": "none", "backend": "inprocess"})
    for engine in (primary, opponent):
        assert isinstance(engine.format, PlainFormat)
        assert (engine.format.user_label, engine.format.assistant_label) == ("来访者", "咨询师")
        assert engine.budget.context_tokens == 300
    assert opponent is not primary


def test_for_version_takes_the_version_model_and_keeps_run_settings():
    settings = EngineSettings(model="demo", prompt_format="plain", max_context_tokens=512, max_new_tokens=64,
                              base_url="http://127.0.0.1:9/v1")
    served = settings.for_version({"base_model": "counsel-v2", "adapter": None, "quantization": None,
                                   "backend": "openai", "served_name": "v2", "base_url": None})
    assert (served.model, served.served_name, served.backend, served.base_url) == (
        "counsel-v2", "v2", "openai", "http://127.0.0.1:9/v1")
    assert (served.prompt_format, served.max_context_tokens, served.generation_defaults) == ("plain", 512,
                                                                                            {"max_new_tokens": 64})


@pytest.mark.parametrize("field, value", [("backend", "vllm"), ("prompt_format", "alpaca")])
def test_unknown_choices_are_refused_once_with_the_field_name(field, value):
    with pytest.raises(ModelLoadError, match=field):
        EngineSettings(**{field: value})


@pytest.mark.parametrize("field, value", [("max_new_tokens", 0), ("max_new_tokens", 5000), ("max_context_tokens", -1),
                                          ("threads", 0), ("max_new_tokens", True)])
def test_out_of_range_numbers_are_refused_not_replaced_by_defaults(field, value):
    with pytest.raises(ModelLoadError, match=field):
        EngineSettings(**{field: value})


def test_names_are_declared_once():
    from mvp.model import dialogue, factory

    assert EngineSettings().user_label == dialogue.PlainFormat().user_label == dialogue.DEFAULT_USER_LABEL
    assert factory.PROMPT_FORMATS is dialogue.PROMPT_FORMATS


def test_an_opponent_keeps_the_tokenizer_only_for_the_same_served_model():
    primary = EngineSettings(model="counsel-v2", backend="openai", base_url="http://127.0.0.1:9/v1",
                             tokenizer="models/demo")
    same = primary.for_version({"base_model": "counsel-v2", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    other = primary.for_version({"base_model": "counsel-v1", "backend": "openai", "served_name": "v1"})
    local = primary.for_version({"base_model": "demo", "backend": "inprocess", "quantization": "none"})
    assert (same.tokenizer, other.tokenizer, local.tokenizer) == ("models/demo", None, None)
