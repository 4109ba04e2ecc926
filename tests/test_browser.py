"""A real headless Chromium (Debian's, driven by Playwright) logs in, chats in Chinese, rates,
compares, and checks that HTML in a message stays inert. Saves screenshots to test-artifacts/."""

from pathlib import Path

import pytest

from mvp.store import Store
from tests.browser_support import ARGS, ARTIFACTS, BROWSER_MARKS, CHROMIUM  # noqa: F401 - also imported from here
from tests.live_app import LiveApp, db_rows

PASSWORD = "browser-pass-123"
pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    store = Store(tmp / "feedback.db")
    store.add_user("wang", PASSWORD, "clinician")
    store.add_user("boss", PASSWORD, "admin")
    live = LiveApp(tiny_model_dir, tmp / "feedback.db", tmp / "app.log")
    yield live
    live.stop()


def rows(db, sql, params=()):
    return db_rows(db, sql, params)


def login(page, url, user):
    page.goto(url)
    page.get_by_test_id("textbox").fill(user)
    page.get_by_test_id("password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#chatbot", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#who').innerText.includes('当前用户')", timeout=30_000)


def wait_idle(page):
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chatbot [data-testid=\"status-tracker\"]')]"
        ".every(e => e.classList.contains('hide'))",
        timeout=60_000,
    )


def send(page, db, text, n_bots):
    count = "SELECT COUNT(*) AS n FROM messages WHERE role = 'assistant'"
    before = rows(db, count)[0]["n"]
    page.locator("#msg textarea").fill(text)
    page.locator("#send").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length >= {n_bots}", timeout=60_000
    )
    wait_idle(page)
    for _ in range(120):  # the reply is stored when the stream ends
        if rows(db, count)[0]["n"] > before:
            break
        page.wait_for_timeout(250)
    page.wait_for_timeout(500)


def test_login_chat_rate_compare_and_inert_html(app, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, app.url, "wang")
    assert "研究演示系统" in page.inner_text("#disclaimer")
    assert "临床评测" in page.inner_text("#who")

    send(page, app.db, "我最近总是失眠，白天也提不起精神。", 1)
    assert "我最近总是失眠" in page.inner_text("#chatbot")
    bots = rows(app.db, "SELECT * FROM messages WHERE role = 'assistant'")
    assert len(bots) == 1 and bots[0]["status"] == "complete"

    # thumbs up on the reply
    page.locator("#chatbot [data-testid='bot']").first.hover()
    page.locator("#chatbot button[aria-label='Like'], #chatbot button[aria-label='赞']").first.click()
    page.wait_for_timeout(1500)
    assert rows(app.db, "SELECT rater, value FROM thumbs") == [{"rater": "wang", "value": 1}]

    # detailed rating of that reply
    page.locator("#score-overall label", has_text="4").click()
    page.locator("#score-empathy label", has_text="5").click()
    page.locator("#tags label", has_text="说教").click()
    page.locator("#comment textarea").fill("共情不错，<b>但</b>有些说教")
    page.locator("#rewrite textarea").fill("听起来失眠让你白天也很疲惫。")
    page.locator("#submit-rating").click()
    page.wait_for_function("() => document.querySelector('#rate-status').innerText.includes('已保存')", timeout=30_000)
    rating = rows(app.db, "SELECT * FROM ratings")
    assert len(rating) == 1
    r = rating[0]
    assert (r["overall"], r["empathy"], r["rater"], r["message_id"]) == (4, 5, "wang", bots[0]["id"])
    assert r["tags"] == '["说教"]' and r["comment"] == "共情不错，<b>但</b>有些说教"
    page.screenshot(path=str(ARTIFACTS / "chat_and_rating.png"), full_page=True)

    # blind comparison: choose A, the chosen reply continues the conversation
    page.locator("#compare").click()
    page.wait_for_selector("#compare-box", state="visible", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    page.locator("#choose-a").click()
    page.wait_for_selector("#compare-box", state="hidden", timeout=30_000)
    comparisons = rows(app.db, "SELECT * FROM comparisons")
    assert len(comparisons) == 1 and comparisons[0]["choice"] == "a"
    active = rows(app.db, "SELECT id FROM messages WHERE role = 'assistant' AND is_active = 1")
    assert [a["id"] for a in active] == [comparisons[0]["message_a"]]

    # HTML and script in a message are shown as text and never run
    payload = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>你好"
    send(page, app.db, payload, 2)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#chatbot img[src='x']").count() == 0
    assert "<img src=x" in page.inner_text("#chatbot")
    stored = rows(app.db, "SELECT content FROM messages WHERE role = 'user' ORDER BY id DESC LIMIT 1")
    assert stored[0]["content"] == payload

    # a crisis message: resources first
    send(page, app.db, "我不想活了，遗书都写好了。", 3)
    last_bot = page.locator("#chatbot [data-testid='bot']").last.inner_text()
    assert "12356" in last_bot
    page.screenshot(path=str(ARTIFACTS / "crisis.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_admin_sees_dashboard_and_review_queue(app, browser):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    login(page, app.url, "boss")
    page.get_by_role("tab", name="安全审查").click()
    page.locator("#refresh-flags").click()
    page.wait_for_function("() => document.querySelector('#flags').innerText.includes('自杀')", timeout=30_000)
    page.get_by_role("tab", name="数据看板").click()
    page.locator("#refresh-dashboard").click()
    page.wait_for_function("() => document.querySelector('#counts').innerText.includes('对话')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.get_by_role("tab", name="模型版本与导出").click()
    page.locator("#refresh-versions").click()
    page.wait_for_function("() => document.querySelector('#versions').innerText.includes('当前')", timeout=30_000)
    page.locator("#export-btn").click()
    page.wait_for_function("() => document.querySelector('#export-out textarea').value.includes('已导出到')",
                           timeout=60_000)
    out = page.locator("#export-out textarea").input_value().split("\n")[0].removeprefix("已导出到 ").strip()
    assert (Path(out) / "manifest.json").exists() and (Path(out) / "trl").is_dir()
    assert Path(out).parent == Path(app.db).parent / "exports"
    context.close()


def test_clinician_has_no_admin_tabs(app, browser):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    login(page, app.url, "wang")
    page.wait_for_timeout(1000)
    assert page.get_by_role("tab", name="数据看板").count() == 0
    context.close()


def test_addresses_in_messages_are_never_fetched_or_linked(app, browser):
    """A tracking pixel or a link in a client message must not make any viewer's browser call out."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Pixel(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    try:
        login(page, app.url, "wang")
        n_bots = page.locator("#chatbot [data-testid='bot']").count()
        send(page, app.db, f"![x]({base}/pixel.png) 你看 [这里]({base}/link) 还有 {base}/bare 我睡不好", n_bots + 1)
        page.wait_for_timeout(1500)
        assert page.locator(f"#chatbot img[src^='{base}']").count() == 0
        assert page.locator(f"#chatbot a[href^='{base}']").count() == 0
        assert "pixel.png" in page.inner_text("#chatbot")  # shown as text, not dropped
        page.screenshot(path=str(ARTIFACTS / "no-remote-fetch.png"), full_page=True)
    finally:
        context.close()
        server.shutdown()
    assert hits == [] and not [u for u in requested if u.startswith(base)]


def visible_in_viewport(page, selector):
    return page.evaluate(
        "(s) => { const r = document.querySelector(s).getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight + 1 && r.height > 0; }", selector)


def test_workspace_resume_alternatives_compare_and_calm_hints(app, browser):
    """A new clinician presses buttons before any conversation (calm hints, no red error), chats,
    regenerates, reloads the page, reopens the conversation from the list and finds the reply, its
    alternative and its rating; the compare box opens in view with its four choices in one row."""
    db = app.db
    db_rows(db, "SELECT 1")
    Store(db).add_user("zhao", PASSWORD, "clinician")
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, app.url, "zhao")
    page.locator("#regen").click()
    toast = page.get_by_test_id("toast-body").first
    toast.wait_for(timeout=15_000)
    page.wait_for_timeout(600)
    assert "还没有对话" in toast.inner_text()
    title = page.evaluate("() => getComputedStyle(document.querySelector('.toast-title'), '::before').content")
    assert title == '"提示"'
    assert page.locator(".toast-body.error").count() == 0
    page.screenshot(path=str(ARTIFACTS / "hint-no-conversation.png"))
    assert page.locator(".error").count() == 0  # no red error badges over the components

    send(page, db, "今天想聊聊工作上的安排。", 1)
    conv = rows(db, "SELECT id FROM conversations WHERE user_name = 'zhao'")[0]["id"]
    first = rows(db, "SELECT id FROM messages WHERE conversation_id = ? AND role = 'assistant'", (conv,))[0]["id"]
    page.locator("#score-overall label", has_text="3").click()
    page.locator("#submit-rating").click()
    page.wait_for_function("() => document.querySelector('#rate-status').innerText.includes('已保存')", timeout=30_000)
    page.locator("#regen").click()
    for _ in range(120):
        if rows(db, "SELECT COUNT(*) AS n FROM messages WHERE conversation_id = ? AND role = 'assistant'", (conv,))[0]["n"] == 2:
            break
        page.wait_for_timeout(250)
    wait_idle(page)
    page.wait_for_timeout(800)

    page.reload()
    page.wait_for_selector("#chatbot", timeout=30_000)
    page.wait_for_timeout(1500)
    assert "今天想聊聊" not in page.inner_text("#chatbot")
    page.locator("#conv-list input").click()
    option = page.get_by_role("option").filter(has_text=f"#{conv}")
    assert "未评分 1/2" in option.inner_text()
    option.click()
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('今天想聊聊')", timeout=30_000)
    page.wait_for_timeout(1000)
    assert "本轮共 2 条回复" in page.inner_text("#chatbot")
    page.locator("#rate-target input").click()
    alt = page.get_by_role("option").filter(has_text="其他回复")
    assert "已评分" in alt.inner_text()
    alt.click()
    page.wait_for_function("() => document.querySelector('#rate-status').innerText.includes('第 1 次评分')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "resume-conversation.png"), full_page=True)
    assert rows(db, "SELECT message_id FROM ratings WHERE rater = 'zhao'")[0]["message_id"] == first

    page.locator("#compare").click()
    page.wait_for_selector("#compare-box", state="visible", timeout=60_000)
    tops = {round(page.locator(f"#choose-{c}").bounding_box()["y"]) for c in ("a", "b", "tie", "both_bad")}
    assert len(tops) == 1, tops  # four choices in one row
    box = page.locator("#compare-box").first.bounding_box()
    assert box["y"] < page.locator("#screening-panel").first.bounding_box()["y"]  # above the screening panel
    assert 0 <= box["y"] < 1000 - 200  # in view where the clinician pressed the button: no scrolling
    page.screenshot(path=str(ARTIFACTS / "compare-in-view.png"))
    page.locator("#choose-tie").click()
    page.wait_for_selector("#compare-box", state="hidden", timeout=30_000)

    # a screening can be started and abandoned (a second start then works)
    page.locator("#start-screening").click()
    page.wait_for_function("() => document.querySelector('#screening-summary').innerText.includes('进行中')", timeout=30_000)
    page.locator("#screening-summary").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "screening-running.png"))
    page.locator("#abandon-screening").click()
    page.wait_for_function("() => document.querySelector('#screening-summary').innerText.includes('已放弃')", timeout=30_000)
    assert rows(db, "SELECT status FROM assessments WHERE conversation_id = ?", (conv,))[0]["status"] == "abandoned"
    assert not errors, errors
    context.close()


def test_admin_review_queue_and_dashboard_load_on_open(app, browser):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    store = Store(app.db)
    conv = store.create_conversation("wang", "intake")
    store.add_user_message(conv, "上周的事让我很难受。")
    crisis = store.add_user_message(conv, "我写好了遗书，不想再撑下去了。")
    store.add_flag(conv, "suicide", ["遗书"], message_id=crisis)
    store.add_flag(conv, "self_harm", ["撑下去"], message_id=crisis)
    for i in range(30):  # the conversation goes on: the flagged message is far above the newest turn
        store.add_user_message(conv, f"后来我们又聊了第 {i + 1} 件事，关于工作和家里。")
    login(page, app.url, "boss")
    page.get_by_role("tab", name="安全审查").click()  # no 刷新 needed
    page.wait_for_function("() => document.querySelector('#flags').innerText.includes('写好了遗书')", timeout=30_000)
    table = page.inner_text("#flags")
    assert "自杀风险" in table and "自伤" in table and "wang" in table and "suicide" not in table
    assert table.count("写好了遗书") == 1  # one row per message, not one per category
    open_before = rows(app.db, "SELECT COUNT(*) AS n FROM flags WHERE reviewed_at IS NULL")[0]["n"]
    page.locator("#flags :text('写好了遗书'):visible").last.click()
    page.wait_for_function("() => document.querySelector('#flag-picked').innerText.includes('已选择')", timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)
    page.locator("#flag-note textarea").fill("已与来访者确认安全计划")
    page.locator("#review-btn").click()
    page.wait_for_function("() => !document.querySelector('#flags').innerText.includes('写好了遗书')", timeout=30_000)
    reviewed = rows(app.db, "SELECT note, reviewed_by FROM flags WHERE message_id = ?", (crisis,))
    assert reviewed and all(r["note"] == "已与来访者确认安全计划" and r["reviewed_by"] == "boss" for r in reviewed)
    assert rows(app.db, "SELECT COUNT(*) AS n FROM flags WHERE reviewed_at IS NULL")[0]["n"] == open_before - len(reviewed)
    # reviewed rows stay findable; one opens its conversation in the chat tab
    page.locator("#flags-all label").click()
    page.wait_for_function("() => document.querySelector('#flags').innerText.includes('已复核：已与来访者确认安全计划')",
                           timeout=30_000)
    page.locator("#flags :text('写好了遗书'):visible").last.click()
    page.wait_for_function("() => document.querySelector('#flag-picked').innerText.includes('已选择')", timeout=15_000)
    page.locator("#open-flag").click()
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('写好了遗书')", timeout=30_000)
    # opened AT the flagged message: it is marked and scrolled into the chat's visible area
    page.wait_for_selector("#chatbot .flag-focus", timeout=15_000)
    assert "写好了遗书" in page.inner_text("#chatbot .flag-focus")
    page.wait_for_timeout(1500)
    in_view = page.evaluate("""() => { const r = document.querySelector('#chatbot .flag-focus').getBoundingClientRect();
        const w = document.querySelector('#chatbot .bubble-wrap').getBoundingClientRect();
        return r.top >= w.top - 1 && r.bottom <= w.bottom + 1; }""")
    assert in_view
    assert f"对话 #{conv}" in page.inner_text("#conv-info")
    assert f"#{conv}" in page.locator("#conv-list input").input_value()  # the list shows which one is open
    page.screenshot(path=str(ARTIFACTS / "review-opened-conversation.png"))
    page.get_by_role("tab", name="数据看板").click()  # loads on open
    page.wait_for_function("() => document.querySelector('#counts').innerText.includes('模型回复')", timeout=30_000)
    counts = page.inner_text("#counts")
    n_user = rows(app.db, "SELECT COUNT(*) AS n FROM messages WHERE role = 'user'")[0]["n"]
    assert f"来访者消息：{n_user}" in counts.replace(" ", "") and "消息：0" not in counts
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "dashboard-on-open.png"), full_page=True)
    context.close()


def test_sending_after_scrolling_up_brings_the_chat_back_to_the_newest_reply(app, browser):
    """A clinician reads an earlier turn, then sends: the chat follows the new reply again."""
    db = app.db
    store = Store(db)
    store.add_user("sun", PASSWORD, "clinician")
    conv = store.create_conversation("sun", "intake", title="长对话")
    parent = None
    for i in range(20):
        parent = store.add_user_message(conv, f"第 {i + 1} 次说起这件事：晚上睡不着，白天没精神。")
        store.add_assistant_message(conv, parent, f"谢谢你告诉我第 {i + 1} 件事，能多说说当时的感受吗？")
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    login(page, app.url, "sun")
    page.locator("#conv-list input").click()
    page.get_by_role("option").filter(has_text=f"#{conv}").click()
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('第 20 次说起')", timeout=30_000)
    at_bottom = "() => { const w = document.querySelector('#chatbot .bubble-wrap'); return w.scrollTop + w.clientHeight >= w.scrollHeight - 30; }"
    page.wait_for_timeout(1500)  # the chat settles (its own autoscroll runs after the render)
    page.evaluate("() => document.querySelector('#chatbot .bubble-wrap').scrollTo(0, 0)")
    page.wait_for_timeout(400)
    assert not page.evaluate(at_bottom)  # reading further up
    send(page, db, "今天想接着说说工作。", 21)
    assert page.evaluate(at_bottom)
    assert "今天想接着说说工作" in page.inner_text("#chatbot")
    page.screenshot(path=str(ARTIFACTS / "chat-follows-after-scroll.png"))
    context.close()


def test_a_waiting_reply_shows_its_queue_place_in_chinese(app, browser):
    """Gradio's status tracker text for a queued event ("queue: 2/3 |") and a running one is shown in
    Chinese. The tiny model answers too fast to catch a real queue here, so the tracker's own text nodes
    are written into a chat status tracker the way Gradio writes them (a new node, then an update)."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    login(page, app.url, "wang")
    shown = page.evaluate("""async () => {
        const box = document.createElement('span');
        document.querySelector('#chatbot [data-testid="status-tracker"]').appendChild(box);
        const node = document.createTextNode('queue: 2/3 |');
        box.appendChild(node);
        await new Promise(r => setTimeout(r, 50));
        const first = box.textContent;
        node.nodeValue = 'queue: 1/3 |';
        await new Promise(r => setTimeout(r, 50));
        const second = box.textContent;
        node.nodeValue = 'processing |';
        await new Promise(r => setTimeout(r, 50));
        return [first, second, box.textContent];
    }""")
    assert shown == ["排队中：第 2 位（共 3 位）|", "排队中：第 1 位（共 3 位）|", "生成中 |"]
    context.close()
