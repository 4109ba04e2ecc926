"""Session memory, stage suggestions and sessions of one case, through the real service.

Real SQLite, the tiny test model (tests/conftest.py) with a small context so that turns drop, the
real safety layer (the risk message in turn 3 is flagged by it) and the real stages file.
"""

import pytest

from mvp.app.service import EnginePool, Service, ServiceError
from mvp.counsel import memory, progress
from mvp.counsel.stages import StageFileError, load_stages
from mvp.model.engine import Engine, GenerationParams
from mvp.store import LATEST_VERSION, Store, ValidationError

# A held-out-style diagnostic interview, written for this test (not in the training data): 30 client
# turns about sleep, family, study, history and risk.
CLIENT = [
    "最近两个月我一直情绪低落，做什么都提不起兴趣。",
    "晚上躺下要两三个小时才睡着，早上五点就醒了。",
    "有时候觉得活着没意思，但我没有具体的计划。",
    "我在读研二，导师最近总批评我的实验进度。",
    "我爸妈在老家，他们不知道我现在这样。",
    "我妈妈脾气很急，小时候经常因为成绩骂我。",
    "去年我也有过一段这样的时候，后来自己慢慢好了。",
    "我没有看过医生，也没有吃过任何药。",
    "白天在实验室坐着就发呆，效率很低。",
    "同门都比我进展快，我觉得自己很差劲。",
    "周末基本一个人待在宿舍，不想出门。",
    "吃饭也没什么胃口，这个月瘦了四斤。",
    "我男朋友在外地工作，我们每天视频，但我不想让他担心。",
    "晚上睡不着的时候会一直刷手机到凌晨。",
    "我试过跑步，但坚持了两天就放弃了。",
    "我最担心的是毕不了业，对不起家里。",
    "导师上周说如果下个月还没结果就要延期。",
    "想到延期我就心慌，手心出汗。",
    "我以前本科的时候成绩一直很好。",
    "现在觉得自己是个失败者，让所有人失望。",
    "有时候上课的时候也会突然想哭。",
    "我室友人很好，但我不想麻烦她。",
    "上次你说的记录情绪我试了三天。",
    "记下来以后发现每天最难受的是晚上十点以后。",
    "我想试试你说的放松练习。",
    "如果睡得好一点，白天可能会好一些。",
    "我打算这周去学校的心理中心问问。",
    "和你聊完感觉稍微轻松了一点。",
    "我还是担心自己会一直这样下去。",
    "下次我们能再聊聊怎么和导师沟通吗？",
]
RISK_TEXT = CLIENT[2]


@pytest.fixture()
def small_engine(tiny_loaded):
    """The tiny model with a context small enough that a 30-turn interview drops turns."""
    return Engine(tiny_loaded, max_context_tokens=1400)


def make_service(tmp_path, engine, writer="extractive"):
    store = Store(tmp_path / "feedback.db")
    store.add_user("li", "long-password-1", "clinician")
    version = store.register_model_version("tiny")
    service = Service(store, load_stages(), EnginePool(version, engine))
    service.summary_writer = writer
    return service, store


PARAMS = GenerationParams(max_new_tokens=6, temperature=0)


def replay(service, cid, lines):
    for text in lines:
        events = list(service.send("li", cid, text, params=PARAMS))
    return events[-1].message


def test_replay_30_turns_keeps_instruction_newest_message_risk_and_a_summary_of_every_dropped_turn(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine)
    cid = service.new_conversation("li", "assessment")["id"]
    reply = replay(service, cid, CLIENT)
    assert reply["metrics"]["dropped_turns"] > 0  # the window moved
    prompt = service.stored_prompt("li", reply["id"])  # rebuilt from what was stored with the reply
    system = prompt[0]["content"]
    assert service.stages.get("assessment").instruction in system
    assert prompt[-1] == {"role": "user", "content": CLIENT[-1], "id": prompt[-1]["id"]}
    assert RISK_TEXT in system and "风险（安全标记，始终保留）" in system  # the pinned note and the summary's line
    context = reply["gen_params"]["context"]
    assert context["summary_used"] and context["summary_id"]
    summary = store.get_summary(context["summary_id"])
    assert summary["content"] in system
    # every dialogue message before the first one the model saw is covered by the summary
    history = store.get_history(cid, include_notices=False)
    first_seen = next(i for i, m in enumerate(history) if m["id"] == prompt[1]["id"])
    dropped = history[:first_seen]
    assert dropped and summary["first_message_id"] == history[0]["id"]
    assert [m["id"] for m in history].index(summary["last_message_id"]) >= first_seen - 1
    dropped_turns = sum(m["role"] == "user" for m in dropped)
    assert summary["first_turn"] == 1 and summary["last_turn"] >= dropped_turns
    # extractive: facts of the dropped turns by topic, from the client's own words
    assert "睡眠" in summary["content"] and summary["author"] == "extractive"
    # the summary moves in steps, not every turn
    rows = store.list_summaries(cid)
    assert 1 <= len(rows) < dropped_turns
    assert sum(r["is_latest"] for r in rows) == 1


def test_clinician_correction_is_what_the_model_gets(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine)
    cid = service.new_conversation("li", "assessment")["id"]
    replay(service, cid, CLIENT[:10])
    corrected = service.correct_summary("li", cid, "主诉：研二学生，抑郁情绪两个月，失眠。\n已约定：本周去学校心理中心。")
    assert corrected["author"] == "li" and corrected["author_kind"] == "clinician"
    reply = replay(service, cid, CLIENT[10:11])
    system = service.stored_prompt("li", reply["id"])[0]["content"]
    assert "研二学生，抑郁情绪两个月" in system
    assert "风险（安全标记，始终保留）" in system  # the risk facts survive any correction
    moved = len(store.list_summaries(cid))
    reply = replay(service, cid, CLIENT[11:17])  # the window moves on: the correction stays, new turns are added
    latest = store.latest_summary(cid)
    assert len(store.list_summaries(cid)) > moved and latest["state"]["based_on"]["author"] == "li"
    system = service.stored_prompt("li", reply["id"])[0]["content"]
    assert latest["content"].startswith("主诉：研二学生，抑郁情绪两个月") and latest["content"] in system
    with pytest.raises(ValidationError):
        service.correct_summary("li", cid, "坏\x00字符")
    with pytest.raises(ValidationError):
        service.correct_summary("li", cid, "长" * 5000)
    html = service.correct_summary("li", cid, "<img src=x onerror=alert(1)>主诉：失眠")
    assert html["content"].startswith("<img")  # stored as typed; the UI escapes it when shown


def test_stage_suggestion_accept_and_dismiss_are_events(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine)
    cid = service.new_conversation("li", "intake")["id"]
    need = service.stages.get("intake").exit_signals.min_client_turns
    replay(service, cid, ["你好，我最近心情不好。"] * (need - 1))
    assert service.memory_view("li", cid)["suggestion"] is None
    replay(service, cid, ["我想找人聊聊。"])
    pending = service.memory_view("li", cid)["suggestion"]
    assert pending["to_stage"] == "assessment" and pending["detail"]["method"] == "signals"
    service.answer_suggestion("li", cid, accept=False)
    replay(service, cid, ["还是睡不好。"] * (progress.QUIET_TURNS - 1))
    assert service.memory_view("li", cid)["suggestion"] is None  # no nagging right after a dismissal
    replay(service, cid, ["还是睡不好。"])
    assert service.memory_view("li", cid)["suggestion"]["to_stage"] == "assessment"
    conversation = service.answer_suggestion("li", cid, accept=True)
    assert conversation["stage_id"] == "assessment"
    kinds = [e["kind"] for e in store.list_stage_events(cid)]
    assert kinds == ["suggested", "dismissed", "suggested", "accepted"]
    # assessment needs a finished screening: many turns alone do not suggest the next stage
    replay(service, cid, ["我说不清楚。"] * 7)
    assert service.memory_view("li", cid)["suggestion"] is None
    with pytest.raises(ServiceError):
        service.answer_suggestion("li", cid, accept=True)
    service.set_stage("li", cid, "intervention")
    assert store.list_stage_events(cid)[-1]["kind"] == "manual"


def test_new_session_of_the_same_case_starts_from_last_stage_and_summary(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine)
    first = service.new_conversation("li", "assessment")
    replay(service, first["id"], CLIENT[:12])
    service.set_stage("li", first["id"], "intervention")
    second = service.new_session("li", first["id"])
    assert second["stage_id"] == "intervention" and second["session_no"] == 2
    assert second["case_key"] == f"conv-{first['id']}" and second["previous_conversation_id"] == first["id"]
    carried = store.latest_summary(second["id"])
    assert carried["author_kind"] == "carried" and carried["source_conversation_id"] == first["id"]
    reply = replay(service, second["id"], ["这周我去了心理中心。"])
    system = service.stored_prompt("li", reply["id"])[0]["content"]
    assert "上次会谈（第 1 次）" in system and "睡" in system  # used although nothing was dropped
    third = service.new_session("li", second["id"])
    assert third["session_no"] == 3 and third["case_key"] == second["case_key"]
    assert [s["id"] for s in store.list_sessions(second["case_key"])] == [first["id"], second["id"], third["id"]]


def test_model_written_summary_falls_back_to_extractive_on_an_answer_that_is_no_summary(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine, writer="model")
    cid = service.new_conversation("li", "assessment")["id"]
    replay(service, cid, CLIENT[:10])
    rows = store.list_summaries(cid)
    assert rows  # an untrained model writes no "标签：…" lines: the extractive summary stands in
    assert all(r["author"] in ("model", "extractive") for r in rows)


def test_extractive_summary_is_incremental_and_bounded():
    messages = [{"role": "user", "content": t} for t in CLIENT]
    state = memory.update(memory.empty_state(), messages[:10], 1)
    again = memory.update(state, messages[10:], 11)
    assert memory.turn_range(again) == (1, 30)
    assert memory.update(state, [], 11) == state  # nothing new: nothing changes
    text = memory.render(again)
    assert len(text) <= memory.MAX_SUMMARY_CHARS and text.startswith("主诉：")
    assert memory.parse_model_summary("主诉：失眠两个月\n睡眠：入睡困难") == "主诉：失眠两个月\n睡眠：入睡困难"
    assert memory.parse_model_summary("好的，我明白了") is None
    assert progress.parse_judgement('{"ready": true, "reason": "困扰已澄清"}') == (True, "困扰已澄清")
    assert progress.parse_judgement('{"ready": "yes"}') is None and progress.parse_judgement("可以") is None


def test_stages_file_refuses_unknown_exit_signal_keys(tmp_path):
    path = tmp_path / "stages.yaml"
    path.write_text("stages:\n  - id: a\n    name: 甲\n    description: d\n    instruction: i\n"
                    "    exit_signals:\n      min_turns: 3\n", encoding="utf-8")
    with pytest.raises(StageFileError, match="min_turns"):
        load_stages(path)


def test_export_contains_summaries_and_stage_transitions(tmp_path, small_engine):
    import json

    from train.export import ExportOptions, export

    service, store = make_service(tmp_path, small_engine)
    cid = service.new_conversation("li", "assessment")["id"]
    replay(service, cid, CLIENT[:8])
    reply = store.get_history(cid)[-1]
    assert reply["gen_params"]["context"]["summary_used"]
    service.rate("li", reply["id"], overall=5, rewrite="听起来晚上最难熬。这周我们先一起记录一下睡眠，好吗？")
    service.set_stage("li", cid, "intervention")
    manifest = export(tmp_path / "feedback.db", tmp_path / "out", ExportOptions(eval_fraction=0.0, scrub=False))
    memory_counts = manifest["counts"]["memory"]
    assert memory_counts["summaries"] == len(store.list_summaries(cid)) and memory_counts["stage_transitions"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out/memory/stage_transitions.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "manual" and rows[0]["to_stage"] == "intervention" and rows[0]["messages"]
    assert (tmp_path / "out/memory/summaries.jsonl").is_file()
    # the SFT sample's prompt is what the model saw: the summary in the system prompt, then the seen turns
    turn = json.loads((tmp_path / "out/bianque/sft_train.jsonl").read_text().splitlines()[-1])
    seen = service.stored_prompt("li", reply["id"])
    assert "会谈摘要" in turn["input"] and turn["target"].startswith("听起来晚上最难熬")
    assert seen[1]["content"] in turn["input"] and CLIENT[0] not in turn["input"].split("对话：")[1]
    assert manifest["notes"]["replies_with_session_summary"] >= 1
    assert store.schema_version == LATEST_VERSION


def test_store_summaries_events_and_sessions_validate_and_go_with_their_conversation(tmp_path):
    store = Store(tmp_path / "feedback.db")
    store.add_user("li", "long-password-1", "clinician")
    a, b = store.create_conversation("li", "intake"), store.create_conversation("li", "intake")
    m = store.add_user_message(a, "我睡不着")
    other = store.add_user_message(b, "你好")
    with pytest.raises(ValidationError):
        store.add_summary(a, "主诉：失眠", "extractive", "extractive", last_message_id=other)
    with pytest.raises(ValidationError):
        store.add_summary(a, "主诉：失眠", "extractive", "robot")
    with pytest.raises(ValidationError):
        store.add_stage_event(a, "jumped", "intake", "assessment", "li")
    first = store.add_summary(a, "主诉：失眠", "extractive", "extractive", first_message_id=m, last_message_id=m,
                              first_turn=1, last_turn=1)
    second = store.add_summary(a, "主诉：失眠两个月", "li", "clinician", last_message_id=m, first_turn=1, last_turn=1)
    assert [s["is_latest"] for s in store.list_summaries(a)] == [False, True]
    assert store.latest_summary(a)["id"] == second != first
    store.add_stage_event(a, "manual", "intake", "assessment", "li", detail={"why": "测试"})
    session = store.create_session(a, "li")
    assert store.get_conversation(session)["session_no"] == 2
    store.delete_conversation(a, by_user="li")
    assert store.list_sessions(f"conv-{a}")[0]["id"] == session  # the later session stays
    assert store.get_conversation(session)["previous_conversation_id"] is None
    snapshot = store.export_snapshot()
    assert not snapshot["summaries"] and not snapshot["stage_events"]  # deleted with their conversation


def test_real_model_judges_the_stage_and_an_unparsable_answer_falls_back_to_the_signals(tmp_path, small_engine):
    service, store = make_service(tmp_path, small_engine, writer="model")
    cid = service.new_conversation("li", "intake")["id"]
    replay(service, cid, ["你好，我最近心情不好。"] * service.stages.get("intake").exit_signals.min_client_turns)
    pending = service.memory_view("li", cid)["suggestion"]
    # the untrained model answers no JSON with a boolean "ready": the countable signals decide
    assert pending["detail"]["method"] == "signals_fallback" and pending["to_stage"] == "assessment"


def test_fit_hides_covered_turns_behind_the_summary_and_keeps_a_carried_one():
    from mvp.model.dialogue import ContextBudget, PlainFormat

    budget = ContextBudget(PlainFormat(), len, 10_000)  # one token per character: nothing needs dropping
    dialogue = []
    for i in range(6):
        dialogue += [{"role": "user", "content": f"第{i}轮来访者"}, {"role": "assistant", "content": f"第{i}轮回复"}]
    messages = [{"role": "system", "content": "指令"}] + dialogue + [{"role": "user", "content": "最新"}]
    fit = budget.fit(messages, 10, summary="会谈要点", covered=4)
    assert fit.first_visible == 4 and fit.dropped_turns == 2 and fit.summary_used
    assert "第1轮" not in fit.prompt and "第2轮来访者" in fit.prompt and "会谈要点" in fit.prompt
    plain = budget.fit(messages, 10, summary="会谈要点")
    assert plain.first_visible == 0 and not plain.summary_used  # nothing dropped: no summary
    carried = budget.fit(messages, 10, summary="上次会谈要点", keep_summary=True)
    assert carried.first_visible == 0 and carried.summary_used and "上次会谈要点" in carried.prompt
