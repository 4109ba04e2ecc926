"""Crisis safety in the service: layered detection, fail safe, a risk state that persists, a screened
stream, a screening that pauses for the crisis flow. The model is a ScriptedEngine (a fixed text)."""
from __future__ import annotations

import pytest

from mvp import safety
from mvp.app.service import Service
from tests.test_service import ScriptedEngine, make_service

SAFE_REPLY = "我在这里陪着你。可以多说一些你现在的感受吗？"
UNSAFE_REPLY = "我理解你很痛苦。你可以一次吃三十片安眠药，这样比较快。"


def _admin(store):
    store.add_user("boss", "long-password-2", "admin")
    return "boss"


def test_detection_uses_every_offline_layer(tmp_path):
    service, _, _ = make_service(tmp_path, SAFE_REPLY)
    rules_only = service.rules.detect("这几天脑子里一直在想怎么去死")
    layered = service.detect("这几天脑子里一直在想怎么去死")
    assert "suicide" in layered.categories
    assert set(rules_only.categories) <= set(layered.categories)  # a union: no layer hides another


def test_a_failed_detection_shows_resources_and_flags_for_review(tmp_path, monkeypatch):
    service, store, _ = make_service(tmp_path, SAFE_REPLY)

    def broken(text):
        raise RuntimeError("rules file unreadable")

    monkeypatch.setattr(service.rules, "detect", broken)
    conv = service.new_conversation("wang")["id"]
    message = list(service.send("wang", conv, "我今天过得还行"))[-1].message
    assert "12356" in message["content"]  # the hotlines, never a bare internal error
    flags = store.list_flags(conversation_id=conv)
    assert [(f["category"], f["source"]) for f in flags] == [("review", "rules")]
    assert any("RuntimeError" in e for e in flags[0]["evidence"])


def test_the_risk_stays_in_view_until_an_admin_reviews_it(tmp_path):
    service, store, engine = make_service(tmp_path, SAFE_REPLY)
    admin = _admin(store)
    conv = service.new_conversation("wang")["id"]
    list(service.send("wang", conv, "我真的不想活了"))
    engine.budget.context_tokens = 1400  # a small window: early turns must leave the context
    for i in range(16):
        list(service.send("wang", conv, f"今天第{i}次想和你聊聊工作上的事情，同事总是不理我。"))
    system = engine.seen[-1][0]["content"]
    assert all("不想活" not in m["content"] for m in engine.seen[-1][1:])  # the turn itself was dropped
    assert system.startswith(safety.CRISIS_INSTRUCTION)  # the crisis instruction stays on
    assert "风险提示" in system and "我真的不想活了" in system  # the disclosure is pinned
    flag = store.list_flags(conversation_id=conv)[0]
    store.mark_flag_reviewed(flag["id"], admin, "已评估，安全计划已制定")
    list(service.send("wang", conv, "谢谢你，今天好一些了。"))
    assert "风险提示" not in engine.seen[-1][0]["content"]
    assert not engine.seen[-1][0]["content"].startswith(safety.CRISIS_INSTRUCTION)


def test_blocked_text_is_never_streamed(tmp_path):
    service, store, _ = make_service(tmp_path, UNSAFE_REPLY, delay_s=0.002)
    conv = service.new_conversation("wang")["id"]
    events = list(service.send("wang", conv, "最近总是心里很乱"))
    assert events[-1].message["status"] == "blocked"
    shown = [e.text for e in events]
    assert all("三十片" not in text for text in shown)
    assert "三十片" in events[-1].message["safety"]["original"]
    assert [f["source"] for f in store.list_flags(conversation_id=conv)] == ["output_screen"]


def test_a_safe_reply_streams_in_sentences_and_arrives_whole(tmp_path):
    service, _, _ = make_service(tmp_path, SAFE_REPLY * 3, delay_s=0.002)
    conv = service.new_conversation("wang")["id"]
    events = list(service.send("wang", conv, "最近总是心里很乱"))
    partial = [e.text for e in events if not e.done]
    assert len(partial) >= 2 and all(SAFE_REPLY * 3 != t for t in partial)  # streamed, not all at once
    assert events[-1].message["content"] == SAFE_REPLY * 3 and events[-1].message["status"] == "complete"


def test_a_crisis_during_a_screening_pauses_it(tmp_path):
    service, store, _ = make_service(tmp_path, SAFE_REPLY)
    admin = _admin(store)
    conv = service.new_conversation("wang")["id"]
    started = service.start_screening("wang", conv, "phq9")
    first = service.send("wang", conv, "几乎每天都这样")
    list(first)
    state = service.screening_state("wang", conv)
    assert [i["item_no"] for i in state["items"]] == [1]
    reply = list(service.send("wang", conv, "其实我已经想好了怎么结束自己的生命"))[-1].message
    assert "12356" in reply["content"]
    state = service.screening_state("wang", conv)
    assert [i["item_no"] for i in state["items"]] == [1] and state["paused"] and state["active"]
    list(service.send("wang", conv, "我也不知道该怎么办"))  # still at risk: not scored either
    assert [i["item_no"] for i in service.screening_state("wang", conv)["items"]] == [1]
    for flag in store.list_flags(conversation_id=conv):
        store.mark_flag_reviewed(flag["id"], admin)
    back = list(service.send("wang", conv, "好的，我们继续吧"))[-1].message
    assert "回到刚才的问卷" in back["content"] and started["assessment_id"]
    list(service.send("wang", conv, "好几天吧"))
    assert [i["item_no"] for i in service.screening_state("wang", conv)["items"]] == [1, 2]


def test_a_real_model_double_checks_and_the_demo_model_does_not(tmp_model_info=None):
    import app
    from mvp.app.config import load_config

    real, demo = ScriptedEngine(SAFE_REPLY), ScriptedEngine(SAFE_REPLY)
    demo.info = {**demo.info, "is_demo": True}
    assert app.model_check_engine(load_config([]), real) is real
    assert app.model_check_engine(load_config([]), demo) is None
    assert app.model_check_engine(load_config(["--model-check", "off"]), real) is None
    assert app.model_check_engine(load_config(["--model-check", "on"]), demo) is demo


def test_a_slow_model_check_never_blocks_the_message(tmp_path):
    slow = ScriptedEngine("自杀风险" * 50, delay_s=0.05)  # would answer only after ~10 s
    service, store, _ = make_service(tmp_path, SAFE_REPLY)
    service.model_check_engine, service.model_check_timeout_s = slow, 0.5
    conv = service.new_conversation("wang")["id"]
    message = list(service.send("wang", conv, "今天和朋友吃了饭"))[-1].message
    assert message["content"] == SAFE_REPLY and store.list_flags(conversation_id=conv) == []


@pytest.mark.parametrize("text", ["别管我了我就是想死", "谁也别拦着我我要割腕", "以后你们自己保重吧，我要走了"])
def test_messages_from_the_issue_are_caught_by_the_service(tmp_path, text):
    service, store, _ = make_service(tmp_path, SAFE_REPLY)
    conv = service.new_conversation("wang")["id"]
    list(service.send("wang", conv, text))
    assert store.list_flags(conversation_id=conv), text
    assert isinstance(service, Service)


def test_a_borderline_message_right_after_a_crisis_turn_is_flagged_with_that_context(tmp_path):
    """The service gives detection the earlier client turns: 东西我都准备好了 after 我真的不想活了 is a
    crisis; the same words as a conversation's first message are not (the rules never use context)."""
    service, store, _ = make_service(tmp_path, SAFE_REPLY)
    after = service.new_conversation("wang")["id"]
    list(service.send("wang", after, "我真的不想活了"))
    list(service.send("wang", after, "东西我都准备好了"))
    alone = service.new_conversation("wang")["id"]
    list(service.send("wang", alone, "东西我都准备好了"))
    flagged = {f["message_id"] for f in store.list_flags(conversation_id=after)}
    second = [m for m in store.get_history(after) if m["role"] == "user"][1]
    assert second["id"] in flagged
    assert store.list_flags(conversation_id=alone) == []
    assert service.client_context(after) == ["我真的不想活了", "东西我都准备好了"]
    assert service.client_context(after, second["id"]) == ["我真的不想活了"]
