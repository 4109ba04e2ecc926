"""Rating assignments in a real headless Chromium (issue 16): an admin makes a batch of k=2 over a
clinician's conversation, two other clinicians rate their blind tasks, the dashboard shows alpha and
the progress. Hostile input through the named API changes nothing. Screenshots go to test-artifacts/."""

import pytest
from gradio_client import Client

from mvp.store import Store
from tests.live_app import LiveApp, db_rows
from tests.test_browser import ARTIFACTS, CHROMIUM, PASSWORD, login  # noqa: F401 - the browser fixture is in conftest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]
TURNS = [("我最近总是失眠，白天也提不起精神。", "听起来失眠已经影响到你白天的状态了，能多说说晚上的情况吗？"),
         ("一躺下就会想工作上的事。", "工作的事情在脑子里转个不停，身体很累却停不下来，对吗？"),
         ("对，我也不知道该怎么办。", "我们可以一起看看，哪些想法最常在睡前出现。")]
SCORES = {"li": [(4, "赞"), (2, "踩"), (5, "赞")], "zhao": [(4, "赞"), (3, "踩"), (5, "赞")]}


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-tasks")
    store = Store(tmp / "feedback.db")
    for name in ("wang", "li", "zhao"):
        store.add_user(name, PASSWORD, "clinician")
    store.add_user("boss", PASSWORD, "admin")
    cid = store.create_conversation("wang", "intake", title="失眠与工作压力")
    for client, reply in TURNS:
        store.add_assistant_message(cid, store.add_user_message(cid, client), reply)
    store.close()
    live = LiveApp(tiny_model_dir, tmp / "feedback.db", tmp / "app.log")
    live.conversation_id = cid
    yield live
    live.stop()


def new_page(browser):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def wait_text(page, selector, text, timeout=30_000):
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=timeout)


def test_admin_batch_two_clinicians_rate_dashboard_shows_alpha(app, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    admin = new_page(browser)
    login(admin, app.url, "boss")
    admin.get_by_role("tab", name="评分批次").click()
    admin.locator("#batch-name input, #batch-name textarea").first.fill("第一轮 · 失眠个案")
    admin.locator("#batch-convs input").click()
    admin.get_by_role("option").filter(has_text=f"#{app.conversation_id}").click()
    admin.keyboard.press("Escape")
    for rater in ("li", "zhao"):
        admin.locator("#batch-raters label", has_text=rater).click()
    admin.locator("#batch-k input").fill("2")
    admin.locator("#batch-create").click()
    wait_text(admin, "#batch-status", "已创建批次")
    assert "3 条回复，每条 2 位评分人，共 6 项任务" in admin.inner_text("#batch-status")
    wait_text(admin, "#batch-progress", "已完成 0 / 3")
    admin.screenshot(path=str(ARTIFACTS / "tasks-batch-created.png"), full_page=True)
    tasks = db_rows(app.db, "SELECT assignee, status FROM rating_tasks ORDER BY id")
    assert sorted(t["assignee"] for t in tasks) == ["li"] * 3 + ["zhao"] * 3  # never wang, the owner

    for rater, judgements in SCORES.items():
        page = new_page(browser)
        login(page, app.url, rater)
        page.get_by_role("tab", name="待评分任务").click()
        wait_text(page, "#task-progress", "已完成 0 / 3")
        for i, (overall, thumb) in enumerate(judgements):
            wait_text(page, "#task-status", f"第 {i + 1} / 3 条")
            assert page.locator("#task-reply textarea").input_value() == TURNS[i][1]
            assert TURNS[i][0] in page.inner_text("#task-context")
            assert "wang" not in page.inner_text("#task-box") and "版本" not in page.inner_text("#task-box")
            page.locator("#task-thumb label", has_text=thumb).click()
            page.locator("#task-score-overall label", has_text=str(overall)).click()
            if i == 2 and rater == "li":  # the longest context
                page.screenshot(path=str(ARTIFACTS / "tasks-clinician-rating.png"), full_page=True)
            page.locator("#task-submit").click()
            wait_text(page, "#task-progress", f"已完成 {i + 1} / 3")
        wait_text(page, "#task-status", "全部评分任务已完成")
        assert not page.locator("#task-box").is_visible()
        page.screenshot(path=str(ARTIFACTS / f"tasks-done-{rater}.png"), full_page=True)
        assert page.errors == []

    ratings = db_rows(app.db, "SELECT rater, scores FROM ratings ORDER BY rater, message_id")
    assert [(r["rater"], r["overall"]) for r in ratings] == [(r, s) for r in SCORES for s, _ in SCORES[r]]
    assert len(db_rows(app.db, "SELECT * FROM thumbs")) == 6

    admin.get_by_role("tab", name="数据看板").click()
    wait_text(admin, "#batch-progress-dash", "已完成 3 / 3")
    table = admin.inner_text("#agreement")
    assert "总体" in table and "点赞/点踩" in table and "可信" in table
    assert "第一轮" in admin.inner_text("#agreement-batches") and "（n=3）" in admin.inner_text("#agreement-batches")
    admin.wait_for_timeout(500)  # the plots above settle their height
    admin.screenshot(path=str(ARTIFACTS / "tasks-dashboard-agreement.png"), full_page=True)

    # a batch from the served model over one sample case, made in the form (generation in the handler)
    admin.get_by_role("tab", name="评分批次").click()
    admin.locator("#batch-kind label", has_text="模型版本").click()
    admin.wait_for_selector("#batch-convs", state="hidden")
    admin.locator("#batch-name input, #batch-name textarea").first.fill("模型回答示例个案")
    admin.locator("#batch-cases input").fill("1")
    admin.locator("#batch-turns input").fill("1")
    admin.locator("#batch-k input").fill("1")
    admin.locator("#batch-create").click()
    wait_text(admin, "#batch-status", "已创建批次 #2：1 条回复", timeout=60_000)
    admin.screenshot(path=str(ARTIFACTS / "tasks-batch-from-version.png"), full_page=True)
    assert admin.errors == []


def test_hostile_task_calls_through_the_api_change_nothing(app):
    li = Client(app.url, auth=("li", PASSWORD), verbose=False)
    before = db_rows(app.db, "SELECT COUNT(*) AS n FROM ratings")[0]["n"]
    for args in ([1, "not a dict"], [1, {"overall": 9}], [10**30, {"overall": 3}], ["1; DROP TABLE ratings", None]):
        with pytest.raises(Exception):
            li.predict(*args, api_name="/submit_task")
    with pytest.raises(Exception, match="管理员"):
        li.predict("x", [app.conversation_id], 1, ["zhao"], api_name="/create_batch")
    assert db_rows(app.db, "SELECT COUNT(*) AS n FROM ratings")[0]["n"] == before
    boss = Client(app.url, auth=("boss", PASSWORD), verbose=False)
    report = boss.predict(0, api_name="/agreement")
    assert [m["id"] for m in report["measures"]][:1] == ["overall"]
    conversations = db_rows(app.db, "SELECT COUNT(*) AS n FROM conversations")[0]["n"]
    with pytest.raises(Exception, match="评分人"):  # refused before any reply is generated
        boss.predict("x", 0, 1, ["nobody"], 1, 1, api_name="/create_version_batch")
    assert db_rows(app.db, "SELECT COUNT(*) AS n FROM conversations")[0]["n"] == conversations


def test_batch_from_the_served_model_over_sample_cases(app):
    """The real engine answers two client turns of one bundled case into an admin-owned conversation."""
    boss = Client(app.url, auth=("boss", PASSWORD), verbose=False)
    result = boss.predict("模型版本 · 示例个案", 0, 1, ["li"], 1, 2, api_name="/create_version_batch")
    assert (result["items"], result["tasks"]) == (2, 2)
    made = db_rows(app.db, "SELECT user_name, case_id FROM conversations WHERE case_id IS NOT NULL")
    assert len(made) == 2 and {m["user_name"] for m in made} == {"boss"}  # this one and the form's
    li = Client(app.url, auth=("li", PASSWORD), verbose=False)
    assert li.predict(100, api_name="/conversations") == []  # not in the clinician's own list
    task = li.predict(result["batch_id"], api_name="/next_task")
    assert task["reply"] and task["context"][0]["role"] == "user" and "model_version_id" not in task
