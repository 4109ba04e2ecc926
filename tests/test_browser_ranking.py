"""The admin dashboard in a real headless Chromium shows the Bradley–Terry ranking of the versions
with intervals and counts, and the versions tab shows each version's release status and the gate's
reasons. Screenshots: test-artifacts/dashboard-ranking.png, test-artifacts/versions-release.png."""

import random

import pytest

from mvp.store import Store
from tests.live_app import LiveApp
from tests.test_browser import ARTIFACTS, CHROMIUM, PASSWORD, login, pytestmark  # noqa: F401 - same marks

WINS = {("基线", "第 1 轮"): 0.35, ("第 1 轮", "第 2 轮"): 0.75, ("基线", "第 2 轮"): 0.6}


def seed(store: Store) -> dict:
    """Three registered versions with 60 blind comparisons, one refused by the release gate."""
    store.add_user("boss", PASSWORD, "admin")
    store.add_user("li", PASSWORD, "clinician")
    ids = {"基线": store.register_model_version("demo", adapter="/runs/base", quantization="none", label="基线")}
    ids["第 1 轮"] = store.register_model_version("demo", adapter="/runs/r1", quantization="none", label="第 1 轮",
                                                parent_id=ids["基线"])
    ids["第 2 轮"] = store.register_model_version("demo", adapter="/runs/r2", quantization="none", label="第 2 轮",
                                                parent_id=ids["第 1 轮"], status="candidate")
    store.set_release_status(ids["第 2 轮"], "refused", {
        "decision": "refuse", "summary": "发布检查未通过",
        "reasons": ["金标准回复困惑度变差超出噪声：新版本 132.2，父版本 124.2（每 token 对数差 +0.063，"
                    "95% 区间 [+0.041, +0.086]，整个区间高于噪声阈值 0.02，n=57）"]})
    rng = random.Random(3)
    conv = store.create_conversation("li", "intake", ids["基线"])
    for (a, b), p in WINS.items():
        for n in range(20):
            u = store.add_user_message(conv, "最近总是睡不着")
            ma = store.add_assistant_message(conv, u, "回复甲", model_version_id=ids[a], make_active=False)
            mb = store.add_assistant_message(conv, u, "回复乙", model_version_id=ids[b], make_active=False)
            choice = "tie" if n % 10 == 9 else ("a" if rng.random() < p else "b")
            store.add_comparison(ma, mb, choice, "li", shown_left=ma, activate_choice=False)
    return ids


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-ranking")
    ids = seed(Store(tmp / "feedback.db"))
    live = LiveApp(tiny_model_dir, tmp / "feedback.db", tmp / "app.log")
    live.ids = ids
    yield live
    live.stop()


def test_dashboard_ranks_versions_with_intervals_and_versions_show_release_status(app):
    from tests.browser_support import open_browser

    ARTIFACTS.mkdir(exist_ok=True)
    with open_browser() as browser:
        page = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000}).new_page()
        login(page, app.url, "boss")
        page.get_by_role("tab", name="数据看板").click()
        page.wait_for_function("() => (document.querySelector('#ranking-text') || {innerText: ''})"
                               ".innerText.includes('版本排名')", timeout=30_000)
        page.wait_for_selector("#ranking-forest", timeout=30_000)
        text = page.inner_text("#ranking-text")
        assert "60 次盲评比较" in text and "两两胜率" in text and "95%" in text
        table = page.inner_text("#ranking")
        for label in ("基线", "第 1 轮", "第 2 轮"):
            assert label in table
        assert "未通过发布检查" in table and "[" in table
        page.locator("#ranking").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "dashboard-ranking.png"), full_page=True)
        page.get_by_role("tab", name="模型版本与导出").click()
        page.locator("#refresh-versions").click()
        page.wait_for_function("() => document.querySelector('#versions').innerText.includes('未通过发布检查')",
                               timeout=30_000)
        versions = page.inner_text("#versions")
        assert "可服务" in versions and "困惑度" in versions
        page.screenshot(path=str(ARTIFACTS / "versions-release.png"), full_page=True)
