"""Shared fixtures: offline environment, a tiny Qwen2 model built in about a second.

The tiny model is untrained (random weights); tests that need sensible text use the demo-model
build in its reduced form (tests/test_demo_model.py) instead.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained tiny Qwen2 model + tokenizer trained on the bundled dialogues (a folder)."""
    from train.demo.tiny_lm import build_untrained

    return build_untrained(tmp_path_factory.mktemp("tiny-model"), shape="test", vocab_size=2000)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    """The tiny model loaded through the app's loader (fp32, CPU)."""
    from mvp.model.loader import ModelSpec, load_model

    return load_model(ModelSpec(model=str(tiny_model_dir), quantization="none"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_loaded):
    """An Engine over the tiny model (chat template format)."""
    from mvp.model.engine import Engine

    return Engine(tiny_loaded)


@pytest.fixture(scope="module")
def browser():
    """A headless Debian Chromium shared by one test module (tests/browser_support.py)."""
    from tests.browser_support import open_browser

    with open_browser() as b:
        yield b
