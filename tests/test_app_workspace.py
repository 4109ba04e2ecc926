"""A clinician's workspace, in process (no server): the conversation list, reopening a conversation
with its ratings and alternatives, calm hints instead of red errors, the review queue by message,
and the dashboard's counts. The handlers are called as Gradio calls them, with a request stand-in."""

from types import SimpleNamespace

import pytest

from mvp.app.service import EnginePool, Service
from mvp.app.ui import build_ui, render
from mvp.app.ui.handlers import Handlers
from mvp.counsel.stages import load_stages
from mvp.store import Store
from tests.test_service import ScriptedEngine

NEUTRAL = "今天想聊聊工作上的安排。"
CRISIS = "我真的不想活了，活着没有意义。"


def req(name):
    return SimpleNamespace(username=name)


@pytest.fixture()
def svc(tmp_path):
    store = Store(tmp_path / "feedback.db")
    store.add_user("wang", "long-password-1", "clinician")
    store.add_user("li", "long-password-1", "clinician")
    store.add_user("boss", "long-password-1", "admin")
    version = store.register_model_version("scripted")
    return Service(store, load_stages(), EnginePool(version, ScriptedEngine("我在听，请继续说。")))


def chat(service, name, cid, text):
    return list(service.send(name, cid, text))[-1].message


def test_conversation_list_is_per_clinician_newest_first_with_counts(svc):
    old = svc.new_conversation("wang", "intake")["id"]
    r1 = chat(svc, "wang", old, NEUTRAL)
    chat(svc, "wang", old, "另外也想说说家里的事。")
    svc.rate("wang", r1["id"], overall=4)
    other = svc.new_conversation("li", "assessment")["id"]
    new = svc.new_conversation("wang", "assessment")["id"]
    chat(svc, "wang", new, NEUTRAL)

    mine = svc.conversations("wang")
    assert [c["id"] for c in mine] == [new, old]
    by_id = {c["id"]: c for c in mine}
    assert (by_id[old]["reply_count"], by_id[old]["unrated_count"]) == (2, 1)
    assert (by_id[new]["reply_count"], by_id[new]["unrated_count"], by_id[new]["stage_id"]) == (1, 1, "assessment")
    assert {c["id"] for c in svc.conversations("boss")} == {old, new, other}

    labels = render.conversation_choices(mine, svc.stages)
    assert labels[0][1] == new and "未评分 1/1" in labels[0][0]
    assert labels[1][0].startswith(f"#{old} ") and "未评分 1/2" in labels[1][0]
    assert "评估" in labels[0][0] or svc.stages.get("assessment").name in labels[0][0]
    admin_labels = render.conversation_choices(svc.conversations("boss"), svc.stages, show_owner=True)
    assert any("li" in label for label, _ in admin_labels)


def test_opening_a_conversation_restores_chat_ratings_alternatives_and_stage(svc):
    h = Handlers(svc)
    cid = svc.new_conversation("wang", "intake")["id"]
    first = chat(svc, "wang", cid, NEUTRAL)
    svc.rate("wang", first["id"], overall=5, comment="很好")
    list(svc.regenerate("wang", cid))  # the first reply stays as an alternative
    svc.set_stage("wang", cid, "assessment")

    out = h.on_open(cid, req("wang"))
    conv_id, messages, ids, target, info, stage, *_ = out
    assert conv_id == cid and stage == "assessment"
    assert f"当前阶段：{svc.stages.get('assessment').name}" in info
    _, _, line = h.on_stage("intervention", cid, req("wang"))
    assert svc.stages.get("intervention").name in line and svc.conversation("wang", cid)["stage_id"] == "intervention"
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert svc.stages.get("intake").name in messages[1]["content"]  # the stage that produced the reply
    assert "本轮共 2 条回复" in messages[1]["content"]
    choices = dict((v, label) for label, v in target["choices"])
    assert first["id"] in choices and "其他回复" in choices[first["id"]] and "已评分" in choices[first["id"]]
    assert target["value"] == ids[1] != first["id"]  # the default target is the reply on screen, not the one it replaced
    loaded = h.on_target(req("wang"), first["id"])
    assert loaded[0] == 5 and "第 1 次评分" in loaded[-1]

    # someone else's conversation cannot be opened
    with pytest.raises(Exception, match="这不是你的对话"):
        h.on_open(cid, req("li"))


def test_buttons_without_a_conversation_explain_themselves_calmly(svc, monkeypatch):
    h = Handlers(svc)
    said = []
    monkeypatch.setattr("mvp.app.ui.handlers.info", said.append)
    assert list(h.on_regen(None, req("wang")))
    h.on_compare(None, 0, req("wang"))
    h.on_start_screening(None, "phq9", req("wang"))
    h.on_fix(None, 1, 2, req("wang"))
    h.make_choose("a")({}, None, req("wang"))
    h.on_fill("", 0)
    assert len(said) == 6 and all("还没有对话" in s or "请先" in s or "还没有量表" in s for s in said)
    assert "还没有可评分的回复" in h.on_submit(req("wang"), None, *([None] * len(h.dimensions)), [], "", "")

    # a screening in progress: regenerate, compare and a second start explain themselves too
    cid = svc.new_conversation("wang")["id"]
    svc.start_screening("wang", cid, "phq9")
    said.clear()
    list(h.on_regen(cid, req("wang")))
    h.on_compare(cid, 0, req("wang"))
    h.on_start_screening(cid, "gad7", req("wang"))
    assert len(said) == 3 and all("放弃筛查" in s for s in said)


def test_the_chatbot_clear_icon_starts_a_new_conversation(svc):
    demo = build_ui(svc, {"base_model": "scripted", "backend": "inprocess"})
    chatbot = next(b for b in demo.blocks.values() if b.elem_id == "chatbot")
    clear = [f for f in demo.fns.values() if any(t[0] == chatbot._id and t[1] == "clear" for t in f.targets)]
    assert clear and clear[0].fn.__name__ == "on_new"
    assert "/conversations" in demo.get_api_info()["named_endpoints"]
    new_btn = next(b for b in demo.blocks.values() if b.elem_id == "new")
    assert "新对话" in new_btn.value


def test_review_queue_has_one_row_per_message_with_text_and_marks_from_the_row(svc, monkeypatch):
    monkeypatch.setattr("mvp.app.ui.handlers.info", lambda s: None)
    h = Handlers(svc)
    cid = svc.new_conversation("wang")["id"]
    chat(svc, "wang", cid, NEUTRAL)
    crisis = svc.store.add_user_message(cid, CRISIS)
    svc.store.add_flag(cid, "suicide", ["不想活"], message_id=crisis)
    svc.store.add_flag(cid, "self_harm", ["伤害"], message_id=crisis)

    table, rows, picked, _ = h.on_flags(False, "", req("boss"))
    assert len(rows) == 1 and rows[0]["message"] == CRISIS and sorted(rows[0]["categories"]) == ["self_harm", "suicide"]
    assert rows[0]["previous"] == "我在听，请继续说。"
    line = table.iloc[0].tolist()
    assert "自杀风险" in line[3] and CRISIS in line[4] and line[1] == "wang" and "T" not in line[0]
    assert line[-1] == "待复核"

    sel = h.on_flag_select(rows, SimpleNamespace(index=[0, 2]))
    assert sel[0]["flag_ids"] == rows[0]["flag_ids"] and "对话 #" in sel[1]
    table, rows, *_ = h.on_review(sel[0], "已电话联系", False, "", req("boss"))
    assert rows == [] and svc.store.count_open_flags() == 0
    table, rows, *_ = h.on_flags(True, "suicide", req("boss"))
    assert len(rows) == 1 and "已复核：已电话联系" in table.iloc[0].tolist()[-1]
    tabs, conv_id, _chat, ids, *_, focus = h.on_flag_open(rows[0], req("boss"))
    assert conv_id == cid
    assert ids[focus] == crisis  # the chat opens at the flagged message (FOCUS_MESSAGE_JS scrolls to it)
    with pytest.raises(Exception, match="只有管理员"):
        h.on_flags(False, "", req("wang"))


def test_dashboard_counts_messages_and_replies_and_rates_carry_counts(svc):
    h = Handlers(svc)
    cid = svc.new_conversation("wang")["id"]
    chat(svc, "wang", cid, NEUTRAL)
    text, per_day, tags, dims, wins, activity = h.on_dashboard(req("boss"))
    assert "**来访者消息**：1" in text and "**模型回复**：1" in text
    assert per_day["y_lim"][0] == 0 and per_day["y_lim"][1] > 0
    assert "临床评测" in activity["角色"].tolist() and "管理员" in activity["角色"].tolist()
    shown = render.dashboard_view({**svc.dashboard("boss"), "wins": [
        {"pair": "v1 vs v2", "win_rate": 0.6, "n": 7, "wins_a": 3, "wins_b": 2, "ties": 2}]})
    assert "7 次比较" in shown[4]["value"]["pair"][0] and "7 次比较" in shown[0]


def test_times_are_local_and_toasts_chinese():
    assert render.local_time("2026-12-01T14:05:00+00:00") == "2026-12-01 22:05"
    from mvp.app.ui.common import ERROR_TITLE, INFO_TITLE

    assert ERROR_TITLE == "无法完成" and INFO_TITLE == "提示"


def test_a_screening_survives_a_restart_and_can_be_abandoned(svc, tmp_path):
    from tests.test_app_screening import ANSWERS

    phq9 = svc.instruments["phq9"]
    cid = svc.new_conversation("wang")["id"]
    svc.start_screening("wang", cid, "phq9")
    chat(svc, "wang", cid, ANSWERS[0][0])
    assert svc.screening_state("wang", cid)["current_item"] == 2

    # a restart: a new service over the same feedback.db
    again = Service(svc.store, load_stages(), svc.engines)
    state = again.screening_state("wang", cid)
    assert state["active"] and state["current_item"] == 2 and [i["score"] for i in state["items"]] == [ANSWERS[0][1]]
    reply = chat(again, "wang", cid, ANSWERS[1][0])
    assert reply["content"].endswith(phq9.items[2].question)
    with pytest.raises(Exception, match="放弃筛查"):
        again.start_screening("wang", cid, "gad7")

    h = Handlers(again)
    summary, _ = h.on_abandon_screening(cid, req("wang"))
    assert "已放弃" in summary
    stored = again.store.list_assessments(cid)[-1]
    assert stored["status"] == "abandoned"
    assert not Service(svc.store, load_stages(), svc.engines).screening_state("wang", cid)["active"]
    again.start_screening("wang", cid, "gad7")  # a new one may start now
    assert again.screening_state("wang", cid)["instrument"] == "gad7"
