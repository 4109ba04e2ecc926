"""The clinician app end to end: a real server (python app.py) driven by gradio_client, with the
rows in feedback.db asserted field by field."""


import pytest
from gradio_client import Client

from mvp.store import Store
from tests.live_app import LiveApp, db_rows

PASSWORD = "clinic-pass-123"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    db = tmp / "feedback.db"
    store = Store(db)
    store.add_user("boss", PASSWORD, "admin")
    store.add_user("wang", PASSWORD, "clinician")
    store.add_user("li", PASSWORD, "clinician")
    store.add_user("expo", PASSWORD, "demo")
    live = LiveApp(tiny_model_dir, db, tmp / "app.log")
    yield live
    live.stop()


def client(app, user="wang"):
    return Client(app.url, auth=(user, PASSWORD), verbose=False)


@pytest.fixture(scope="module")
def wang(app):
    return client(app)


def rows(app, sql, params=()):
    return db_rows(app.db, sql, params)


def count(app, table):
    return rows(app, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def test_unauthenticated_calls_are_refused(app):
    with pytest.raises(Exception):
        Client(app.url, verbose=False).predict(api_name="/stages")
    with pytest.raises(Exception):
        Client(app.url, auth=("wang", "wrong-password"), verbose=False)


def test_named_endpoints_are_listed(wang):
    api = wang.view_api(return_format="dict", print_info=False)
    names = set(api["named_endpoints"])
    for name in ("/new_conversation", "/chat", "/rate", "/compare", "/choose", "/thumb",
                 "/regenerate", "/history", "/stages", "/stop"):
        assert name in names


def test_chat_rate_revise_regenerate_compare(app, wang):
    stages = wang.predict(api_name="/stages")
    assert [s["id"] for s in stages][:2] == ["intake", "assessment"]
    conv = wang.predict(stage_id="assessment", case_id="", api_name="/new_conversation")
    assert conv["stage_id"] == "assessment" and conv["user_name"] == "wang" and not conv["is_demo"]

    reply = wang.predict(conversation_id=conv["id"], message="我最近总是睡不着，心情很低落。", stage_id="",
                         api_name="/chat")
    assert reply["done"] is True and reply["status"] == "complete"
    msgs = rows(app, "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conv["id"],))
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    user_msg, bot = msgs
    assert user_msg["content"] == "我最近总是睡不着，心情很低落。" and user_msg["stage_id"] == "assessment"
    assert bot["id"] == reply["message_id"] and bot["parent_id"] == user_msg["id"]
    assert bot["content"] == reply["text"] and bot["stage_id"] == "assessment"
    assert bot["model_version_id"] is not None and bot["is_active"] == 1
    import json

    params, metrics = json.loads(bot["gen_params"]), json.loads(bot["metrics"])
    assert {"temperature", "top_p", "max_new_tokens", "repetition_penalty", "seed"} <= set(params)
    assert metrics["new_tokens"] > 0 and metrics["prompt_tokens"] > 0 and metrics["total_s"] > 0
    version = rows(app, "SELECT * FROM model_versions WHERE id = ?", (bot["model_version_id"],))[0]
    assert version["quantization"] == "none" and version["backend"] == "inprocess"

    # thumbs
    wang.predict(message_id=bot["id"], value=1, api_name="/thumb")
    wang.predict(message_id=bot["id"], value=-1, api_name="/thumb")
    thumbs = rows(app, "SELECT * FROM thumbs WHERE message_id = ?", (bot["id"],))
    assert [(t["rater"], t["value"]) for t in thumbs] == [("wang", -1)]

    # detailed rating, then a revision
    r1 = wang.predict(message_id=bot["id"], overall=3, empathy=4, professionalism=2, safety=5, guidance=3,
                      tags=["过长", "说教"], comment="<b>还行</b>", rewrite="听起来这段时间你很辛苦。", api_name="/rate")
    r2 = wang.predict(message_id=bot["id"], overall=4, empathy=None, professionalism=None, safety=None,
                      guidance=None, tags=[], comment="修改后", rewrite=None, api_name="/rate")
    assert (r1["revision"], r2["revision"]) == (1, 2)
    ratings = rows(app, "SELECT * FROM ratings WHERE message_id = ? ORDER BY revision", (bot["id"],))
    assert len(ratings) == 2
    first, latest = ratings
    assert (first["overall"], first["empathy"], first["professionalism"], first["safety"], first["guidance"]) == (3, 4, 2, 5, 3)
    assert json.loads(first["tags"]) == ["过长", "说教"] and first["comment"] == "<b>还行</b>"
    assert first["rewrite"] == "听起来这段时间你很辛苦。" and first["rater"] == "wang"
    assert latest["overall"] == 4 and latest["comment"] == "修改后" and latest["is_latest"] == 1
    assert first["is_latest"] == 0

    # regenerate keeps the earlier reply as an alternative
    again = wang.predict(conversation_id=conv["id"], api_name="/regenerate")
    replies = rows(app, "SELECT * FROM messages WHERE parent_id = ? AND role = 'assistant' ORDER BY id", (user_msg["id"],))
    assert [r["id"] for r in replies] == [bot["id"], again["message_id"]]
    assert [r["is_active"] for r in replies] == [0, 1]

    # blind comparison: two new replies to the same message; the chosen one continues
    pair = wang.predict(conversation_id=conv["id"], opponent_version_id=0, api_name="/compare")
    assert pair["message_a"] != pair["message_b"]
    result = wang.predict(message_a=pair["message_a"], message_b=pair["message_b"], choice="b", api_name="/choose")
    comparison = rows(app, "SELECT * FROM comparisons WHERE id = ?", (result["comparison_id"],))[0]
    assert (comparison["message_a"], comparison["message_b"], comparison["shown_left"], comparison["choice"],
            comparison["rater"]) == (pair["message_a"], pair["message_b"], pair["message_a"], "b", "wang")
    history = wang.predict(conversation_id=conv["id"], api_name="/history")
    assert [m["id"] for m in history if m["role"] == "assistant"] == [pair["message_b"]]
    replies = rows(app, "SELECT id FROM messages WHERE parent_id = ? AND role = 'assistant'", (user_msg["id"],))
    assert len(replies) == 4  # nothing overwritten

    # a stage switch applies from the next turn
    reply2 = wang.predict(conversation_id=conv["id"], message="我该怎么办？", stage_id="intervention", api_name="/chat")
    bot2 = rows(app, "SELECT * FROM messages WHERE id = ?", (reply2["message_id"],))[0]
    assert bot2["stage_id"] == "intervention"
    assert rows(app, "SELECT stage_id FROM conversations WHERE id = ?", (conv["id"],))[0]["stage_id"] == "intervention"


def test_bad_input_clear_errors_nothing_written(app, wang):
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
    before = {t: count(app, t) for t in ("messages", "ratings", "comparisons", "thumbs")}
    bad_calls = [
        dict(conversation_id=conv["id"], message="   ", stage_id="", api_name="/chat"),
        dict(conversation_id=conv["id"], message="长" * 20000, stage_id="", api_name="/chat"),
        dict(conversation_id=conv["id"], message="你好", stage_id="no_such_stage", api_name="/chat"),
        dict(conversation_id=999999, message="你好", stage_id="", api_name="/chat"),
        dict(message_id=999999, overall=3, api_name="/rate"),
        dict(message_id=999999, value=1, api_name="/thumb"),
        dict(message_a=1, message_b=2, choice="maybe", api_name="/choose"),
        dict(stage_id="nope", case_id="", api_name="/new_conversation"),
    ]
    for call in bad_calls:
        api_name = call.pop("api_name")
        with pytest.raises(Exception) as info:
            wang.predict(**call, api_name=api_name)
        assert "Traceback" not in str(info.value)
    reply = wang.predict(conversation_id=conv["id"], message="你好", stage_id="", api_name="/chat")
    for score in (0, 6, 2.5, "5", True):
        with pytest.raises(Exception):
            wang.predict(message_id=reply["message_id"], overall=score, api_name="/rate")
    with pytest.raises(Exception):
        wang.predict(message_id=reply["message_id"], tags=["不存在的标签"], api_name="/rate")
    after = {t: count(app, t) for t in ("messages", "ratings", "comparisons", "thumbs")}
    assert after["messages"] == before["messages"] + 2  # only the valid "你好" turn
    assert after["ratings"] == before["ratings"] and after["comparisons"] == before["comparisons"]
    assert after["thumbs"] == before["thumbs"]


def test_html_is_stored_verbatim(app, wang):
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
    payload = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    wang.predict(conversation_id=conv["id"], message=payload, stage_id="", api_name="/chat")
    stored = rows(app, "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user'", (conv["id"],))
    assert stored[0]["content"] == payload


def test_permissions(app, wang):
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
    reply = wang.predict(conversation_id=conv["id"], message="你好", stage_id="", api_name="/chat")
    li = client(app, "li")
    with pytest.raises(Exception):  # another clinician's conversation
        li.predict(conversation_id=conv["id"], api_name="/history")
    with pytest.raises(Exception):
        li.predict(message_id=reply["message_id"], overall=1, api_name="/rate")
    with pytest.raises(Exception):  # admin only
        wang.predict(include_reviewed=False, api_name="/flags")
    expo = client(app, "expo")
    demo_conv = expo.predict(stage_id="", case_id="", api_name="/new_conversation")
    assert demo_conv["is_demo"] is True
    demo_reply = expo.predict(conversation_id=demo_conv["id"], message="你好", stage_id="", api_name="/chat")
    n = count(app, "ratings")
    with pytest.raises(Exception):
        expo.predict(message_id=demo_reply["message_id"], overall=5, api_name="/rate")
    with pytest.raises(Exception):
        expo.predict(message_id=demo_reply["message_id"], value=1, api_name="/thumb")
    assert count(app, "ratings") == n


def test_crisis_message_shows_resources_flags_and_reaches_review_queue(app, wang):
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
    reply = wang.predict(conversation_id=conv["id"], message="我真的不想活了，安眠药已经攒了很多。", stage_id="",
                         api_name="/chat")
    assert reply["text"].index("12356") < 200  # the resources come first
    assert reply["safety"]["preamble"] is True and "suicide" in reply["safety"]["categories"]
    flags = rows(app, "SELECT * FROM flags WHERE conversation_id = ?", (conv["id"],))
    assert flags and {f["category"] for f in flags} >= {"suicide"} and flags[0]["source"] == "rules"
    boss = client(app, "boss")
    queue = boss.predict(include_reviewed=False, api_name="/flags")
    flag = next(f for f in queue if f["conversation_id"] == conv["id"])
    boss.predict(flag_id=flag["id"], note="已电话回访", api_name="/review_flag")
    assert all(f["id"] != flag["id"] for f in boss.predict(include_reviewed=False, api_name="/flags"))
    reviewed = rows(app, "SELECT reviewed_by, note FROM flags WHERE id = ?", (flag["id"],))[0]
    assert reviewed == {"reviewed_by": "boss", "note": "已电话回访"}


def test_delete_conversation_removes_everything(app, wang):
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
    reply = wang.predict(conversation_id=conv["id"], message="你好", stage_id="", api_name="/chat")
    wang.predict(message_id=reply["message_id"], overall=4, api_name="/rate")
    wang.predict(conversation_id=conv["id"], api_name="/delete_conversation")
    assert rows(app, "SELECT * FROM messages WHERE conversation_id = ?", (conv["id"],)) == []
    assert rows(app, "SELECT * FROM ratings WHERE message_id = ?", (reply["message_id"],)) == []


def test_session_memory_and_stage_suggestion_over_the_api(app, wang):
    """/memory, /correct_summary, /answer_suggestion and /new_session do over gradio_client what the
    会谈摘要 panel and the stage banner do in the browser."""
    conv = wang.predict(stage_id="intake", case_id="", api_name="/new_conversation")["id"]
    view = wang.predict(conversation_id=conv, api_name="/memory")
    assert view["summary"] is None and view["suggestion"] is None and view["session_no"] == 1
    with pytest.raises(Exception, match="没有待处理的阶段建议"):
        wang.predict(conversation_id=conv, accept=True, api_name="/answer_suggestion")
    for i in range(12):  # intake's exit signal: min_client_turns (config/stages.yaml)
        wang.predict(conversation_id=conv, message=f"第 {i + 1} 件事：最近睡不好，和家里人也常吵架。", stage_id="",
                     api_name="/chat")
        view = wang.predict(conversation_id=conv, api_name="/memory")
        if view["suggestion"]:
            break
    assert view["suggestion"] and view["suggestion"]["to_stage"] == "assessment"
    with pytest.raises(Exception, match="true 或 false"):
        wang.predict(conversation_id=conv, accept="yes", api_name="/answer_suggestion")
    accepted = wang.predict(conversation_id=conv, accept=True, api_name="/answer_suggestion")
    assert accepted["stage_id"] == "assessment"
    kinds = [r["kind"] for r in rows(app, "SELECT kind FROM stage_events WHERE conversation_id = ? ORDER BY id", (conv,))]
    assert kinds[-2:] == ["suggested", "accepted"]
    fixed = wang.predict(conversation_id=conv, text="主诉：失眠两个月，与母亲关系紧张。", api_name="/correct_summary")
    assert fixed["author"] == "wang" and fixed["content"].startswith("主诉：失眠两个月")
    assert wang.predict(conversation_id=conv, api_name="/memory")["summary"]["id"] == fixed["id"]
    nxt = wang.predict(conversation_id=conv, api_name="/new_session")
    assert nxt["session_no"] == 2 and nxt["stage_id"] == "assessment"
    carried = wang.predict(conversation_id=nxt["id"], api_name="/memory")["summary"]
    assert carried and "主诉：失眠两个月" in carried["content"]
