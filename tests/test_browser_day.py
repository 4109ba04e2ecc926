"""A clinician's working day across a real restart of the app, in a real headless Chromium.

Day 1: chat, rate, regenerate, start a PHQ-9 screening and answer part of it; the app stops.
Day 2 (a new app process on the same feedback.db): resume yesterday's conversation from the list, rate
the alternative reply, finish the screening where it stopped, compare two replies, write a crisis
message; an admin reviews it from the queue, opening the conversation at that message.
Screenshots: test-artifacts/day-*.png.
"""

from __future__ import annotations

import pytest

from mvp.assessment.instruments import load_instruments
from mvp.store import Store
from tests.live_app import LiveApp, db_rows
from tests.browser_support import ARTIFACTS, BROWSER_MARKS
from tests.test_browser import PASSWORD, login, send, wait_idle

pytestmark = BROWSER_MARKS
ANSWERS = ["几乎每天都这样，什么都不想做", "一半以上的天数都很低落", "完全不会，睡得挺好的", "有好几天觉得累",
           "几乎每天都吃不下饭", "完全不会这样想", "有好几天看书看不进去", "完全不会", "完全不会有这种念头"]
CRISIS = "其实我已经写好遗书了，准备这周末结束自己的生命。"


def _answer(page, db, conv, text, question):
    """Answer the current screening item in the chat; wait for the next question (or the closing)."""
    n = db_rows(db, "SELECT COUNT(*) AS n FROM assessment_items i JOIN assessments a ON a.id = i.assessment_id"
                    " WHERE a.conversation_id = ?", (conv,))[0]["n"]
    page.locator("#msg textarea").fill(text)
    page.locator("#send").click()
    page.wait_for_function(f"() => document.querySelector('#chatbot').innerText.includes({question!r})", timeout=60_000)
    wait_idle(page)
    for _ in range(80):
        if db_rows(db, "SELECT COUNT(*) AS n FROM assessment_items i JOIN assessments a ON a.id = i.assessment_id"
                       " WHERE a.conversation_id = ?", (conv,))[0]["n"] > n:
            break
        page.wait_for_timeout(250)


def test_a_clinician_day_across_a_restart(tiny_model_dir, tmp_path, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "feedback.db"
    store = Store(db)
    store.add_user("wang", PASSWORD, "clinician")
    store.add_user("boss", PASSWORD, "admin")
    phq9 = load_instruments()["phq9"]

    # -- day 1 ------------------------------------------------------------------------------------
    app = LiveApp(tiny_model_dir, db, tmp_path / "day1.log")
    try:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, app.url, "wang")
        send(page, db, "最近工作压力很大，晚上总是睡不着。", 1)
        conv = db_rows(db, "SELECT id FROM conversations WHERE user_name = 'wang'")[0]["id"]
        first = db_rows(db, "SELECT id FROM messages WHERE conversation_id = ? AND role = 'assistant'", (conv,))[0]["id"]
        page.locator("#regen").click()
        for _ in range(120):
            if db_rows(db, "SELECT COUNT(*) AS n FROM messages WHERE conversation_id = ? AND role = 'assistant'",
                       (conv,))[0]["n"] == 2:
                break
            page.wait_for_timeout(250)
        wait_idle(page)
        page.wait_for_timeout(800)
        page.locator("#score-overall label", has_text="4").click()  # the regenerated reply, shown now
        page.locator("#submit-rating").click()
        page.wait_for_function("() => document.querySelector('#rate-status').innerText.includes('已保存')", timeout=30_000)
        second = db_rows(db, "SELECT message_id FROM ratings WHERE rater = 'wang'")[0]["message_id"]
        assert second != first
        page.locator("#start-screening").click()
        page.wait_for_function("() => document.querySelector('#screening-summary').innerText.includes('进行中')", timeout=30_000)
        for i in range(3):
            _answer(page, db, conv, ANSWERS[i], phq9.items[i + 1].question)
        page.screenshot(path=str(ARTIFACTS / "day-1-screening-part-done.png"), full_page=True)
        context.close()
    finally:
        app.stop()

    # -- day 2: a new app process on the same database ----------------------------------------------
    app = LiveApp(tiny_model_dir, db, tmp_path / "day2.log")
    try:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        login(page, app.url, "wang")
        page.locator("#conv-list input").click()
        page.get_by_role("option").filter(has_text=f"#{conv}").click()
        page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('最近工作压力很大')",
                               timeout=30_000)
        page.wait_for_function("() => document.querySelector('#screening-summary').innerText.includes('进行中')",
                               timeout=30_000)
        assert "本轮共 2 条回复" in page.inner_text("#chatbot")
        page.screenshot(path=str(ARTIFACTS / "day-2-resumed.png"), full_page=True)

        # rate the alternative: yesterday's first reply, replaced on screen by the regenerated one
        page.locator("#rate-target input").click()
        page.get_by_role("option").filter(has_text="其他回复").first.click()
        page.wait_for_timeout(800)
        page.locator("#score-overall label", has_text="2").click()
        page.locator("#submit-rating").click()
        page.wait_for_function("() => document.querySelector('#rate-status').innerText.includes('已保存')", timeout=30_000)
        rated = {r["message_id"]: r for r in db_rows(db, "SELECT * FROM ratings WHERE rater = 'wang' AND is_latest = 1")}
        assert set(rated) == {first, second} and rated[first]["overall"] == 2  # today's is on the alternative

        # finish the screening where it stopped (item 4 of 9)
        for i in range(3, 9):
            nxt = phq9.items[i + 1].question if i + 1 < 9 else phq9.closing
            _answer(page, db, conv, ANSWERS[i], nxt)
        page.wait_for_function("() => document.querySelector('#screening-summary').innerText.includes('总分')",
                               timeout=30_000)
        done = db_rows(db, "SELECT status, total FROM assessments WHERE conversation_id = ?", (conv,))
        assert done[-1]["status"] == "finished" and done[-1]["total"] == 3 + 2 + 0 + 1 + 3 + 0 + 1 + 0 + 0
        page.locator("#screening-summary").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "day-2-screening-finished.png"))

        # compare two replies to the next message
        send(page, db, "今天好一点了，想聊聊怎么和领导沟通。", 1)
        page.locator("#compare").click()
        page.wait_for_selector("#compare-box", state="visible", timeout=60_000)
        page.locator("#choose-b").click()
        page.wait_for_selector("#compare-box", state="hidden", timeout=30_000)
        assert db_rows(db, "SELECT choice FROM comparisons WHERE rater = 'wang'")[-1]["choice"] == "b"

        # a crisis message: flagged, resources shown
        send(page, db, CRISIS, 1)
        page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('12356')", timeout=30_000)
        flagged = db_rows(db, "SELECT message_id FROM flags WHERE conversation_id = ? AND reviewed_at IS NULL", (conv,))
        crisis_id = db_rows(db, "SELECT id FROM messages WHERE content = ?", (CRISIS,))[0]["id"]
        assert crisis_id in {f["message_id"] for f in flagged}
        assert not errors, errors
        context.close()

        # the admin reviews it from the queue, opening the conversation at that message
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, app.url, "boss")
        page.get_by_role("tab", name="安全审查").click()
        page.wait_for_function("() => document.querySelector('#flags').innerText.includes('写好遗书')", timeout=30_000)
        page.locator("#flags :text('写好遗书'):visible").last.click()
        page.wait_for_function("() => document.querySelector('#flag-picked').innerText.includes('已选择')", timeout=15_000)
        page.locator("#open-flag").click()
        page.wait_for_selector("#chatbot .flag-focus", timeout=30_000)
        assert "写好遗书" in page.inner_text("#chatbot .flag-focus")
        page.screenshot(path=str(ARTIFACTS / "day-2-admin-at-flag.png"))
        page.get_by_role("tab", name="安全审查").click()
        page.locator("#flags :text('写好遗书'):visible").last.click()
        page.wait_for_function("() => document.querySelector('#flag-picked').innerText.includes('已选择')", timeout=15_000)
        page.locator("#flag-note textarea").fill("已电话联系，制定安全计划")
        page.locator("#review-btn").click()
        page.wait_for_function("() => !document.querySelector('#flags').innerText.includes('写好遗书')", timeout=30_000)
        reviewed = db_rows(db, "SELECT reviewed_by, note FROM flags WHERE message_id = ?", (crisis_id,))
        assert reviewed and all(r["reviewed_by"] == "boss" and r["note"] == "已电话联系，制定安全计划" for r in reviewed)
        context.close()
    finally:
        app.stop()
