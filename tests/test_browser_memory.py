"""A real headless Chromium against the real app: the 会谈摘要 panel beside the chat, a clinician's
correction of it, the cut marker at the first turn the model still sees, and an accepted stage
suggestion. Screenshots go to test-artifacts/ (memory_*.png).

The app runs the tiny test model with a small context (--max-context-tokens) so that turns leave it
after a few messages; the first turns are sent through the app's own API (gradio_client), the rest
in the browser.
"""

import pytest

from mvp.store import Store
from tests.browser_support import ARTIFACTS, BROWSER_MARKS, open_browser
from tests.live_app import LiveApp, db_rows

PASSWORD = "browser-pass-123"
CLIENT = [
    "最近两个月我一直情绪低落，做什么都提不起兴趣。",
    "晚上躺下要两三个小时才睡着，早上五点就醒了。",
    "我在读研二，导师最近总批评我的实验进度。",
    "我妈妈脾气很急，小时候经常因为成绩骂我。",
    "去年我也有过一段这样的时候，后来自己慢慢好了。",
    "周末基本一个人待在宿舍，不想出门。",
]
CORRECTION = "主诉：研二学生，情绪低落两个月，入睡困难、早醒。\n家庭：与母亲关系紧张。"

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-memory")
    store = Store(tmp / "feedback.db")
    store.add_user("wang", PASSWORD, "clinician")
    live = LiveApp(tiny_model_dir, tmp / "feedback.db", tmp / "app.log", "--max-context-tokens", "300",
                   "--max-new-tokens", "8", "--summary-writer", "extractive")
    yield live
    live.stop()


def text_of(page, selector):
    return page.inner_text(selector)


def wait_text(page, selector, text, timeout=30_000):
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout)


def test_summary_panel_correction_cut_marker_and_accepted_stage_suggestion(app):
    from gradio_client import Client
    ARTIFACTS.mkdir(exist_ok=True)
    client = Client(app.url, auth=("wang", PASSWORD), verbose=False)
    conv = client.predict(stage_id="intake", case_id="", api_name="/new_conversation")["id"]
    for text in CLIENT[:5]:
        client.predict(conversation_id=conv, message=text, stage_id="", api_name="/chat")
    assert db_rows(app.db, "SELECT COUNT(*) AS n FROM summaries")[0]["n"] >= 1  # turns left the context

    with open_browser() as browser:
        page = browser.new_context(locale="zh-CN", viewport={"width": 1500, "height": 1200}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(app.url)
        page.get_by_test_id("textbox").fill("wang")
        page.get_by_test_id("password").fill(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#who') && document.querySelector('#who').innerText.includes('当前用户')",
                               timeout=30_000)

        # restoring the conversation brings back the summary panel and the cut marker
        page.locator("#conv-list input").click()
        page.get_by_role("option").filter(has_text=f"#{conv}").click()
        wait_text(page, "#chatbot", "以上内容已移出模型视野")
        wait_text(page, "#summary-info", "覆盖第 1–")
        assert "自动摘录" in text_of(page, "#summary-info")
        summary = page.locator("#summary-text textarea").input_value()
        assert summary.startswith("主诉：") and "情绪低落" in summary
        chat = text_of(page, "#chatbot")
        assert chat.index("以上内容已移出模型视野") > chat.index(CLIENT[0])  # the marker sits after dropped turns
        page.screenshot(path=str(ARTIFACTS / "memory_panel_and_cut.png"), full_page=True)

        # a correction: stored as the clinician's, and what the model gets on the next turn
        page.locator("#summary-text textarea").fill(CORRECTION)
        page.locator("#summary-save").click()
        wait_text(page, "#summary-info", "临床人员 wang 修改")
        latest = db_rows(app.db, "SELECT * FROM summaries WHERE is_latest = 1 AND conversation_id = ?", (conv,))[0]
        assert latest["author"] == "wang" and latest["content"] == CORRECTION

        # the 6th client turn in 初始访谈 meets its exit signal: the suggestion banner appears
        page.locator("#msg textarea").fill(CLIENT[5])
        page.locator("#send").click()
        page.wait_for_selector("#stage-suggestion", state="visible", timeout=60_000)
        wait_text(page, "#stage-suggestion-text", "建议进入下一阶段：评估与问题澄清")
        reply = db_rows(app.db, "SELECT gen_params FROM messages WHERE role = 'assistant' AND conversation_id = ?"
                        " ORDER BY id DESC LIMIT 1", (conv,))[0]
        assert "研二学生，情绪低落两个月" in reply["gen_params"]  # the stored prompt has the correction
        wait_text(page, "#chatbot", "以上内容已移出模型视野")
        page.screenshot(path=str(ARTIFACTS / "memory_stage_suggestion.png"), full_page=True)

        page.locator("#stage-accept").click()
        page.wait_for_selector("#stage-suggestion", state="hidden", timeout=30_000)
        wait_text(page, "#conv-info", "评估与问题澄清")
        assert "评估与问题澄清" in page.locator("#stage input").input_value()
        events = db_rows(app.db, "SELECT kind, from_stage, to_stage, actor FROM stage_events WHERE conversation_id = ?"
                         " ORDER BY id", (conv,))
        assert [(e["kind"], e["to_stage"]) for e in events] == [("suggested", "assessment"), ("accepted", "assessment")]
        assert events[1]["actor"] == "wang"
        assert db_rows(app.db, "SELECT stage_id FROM conversations WHERE id = ?", (conv,))[0]["stage_id"] == "assessment"
        page.screenshot(path=str(ARTIFACTS / "memory_stage_accepted.png"), full_page=True)

        # a new session of the same client starts from the last stage and the last summary
        page.locator("#new-session").click()
        wait_text(page, "#summary-info", "第 2 次会谈")
        assert "上次会谈（第 1 次）" in page.locator("#summary-text textarea").input_value()
        assert "评估与问题澄清" in page.locator("#stage input").input_value()
        page.screenshot(path=str(ARTIFACTS / "memory_new_session.png"), full_page=True)
    assert not errors, errors
