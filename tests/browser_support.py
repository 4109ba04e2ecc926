"""What the browser tests share: Debian's Chromium driven by Playwright, its flags, where screenshots go.

    from tests.browser_support import ARTIFACTS, BROWSER_MARKS, open_browser
    pytestmark = BROWSER_MARKS
    with open_browser() as browser: page = browser.new_context(locale="zh-CN").new_page()

The `browser` fixture in tests/conftest.py is `open_browser()` once per test module. Never
`playwright install`: it downloads a browser; `.ci/run` installs Debian's `chromium`.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)"),
]


@contextmanager
def open_browser():
    """A headless Debian Chromium for the duration of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
