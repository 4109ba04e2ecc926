"""The service layer without a server: output screening, stop, screening during chat.

The model is replaced by `ScriptedEngine`, an EngineBase whose worker thread streams a fixed text:
the point here is what the service does with a given reply (screen, store, flag), which a random
tiny model cannot be made to say.
"""

import time

import pytest

from mvp.model.dialogue import ContextBudget, PlainFormat
from mvp.model.engine import _DONE, EngineBase, ReplyResult
from mvp.app.service import EnginePool, Service, ServiceError
from mvp.counsel.stages import load_stages
from mvp.store import Store


class ScriptedEngine(EngineBase):
    backend = "scripted"

    def __init__(self, text, delay_s=0.0):
        self.text = text
        self.delay_s = delay_s
        self.format = PlainFormat()
        self.budget = ContextBudget(self.format, len, 100_000)
        self.generation_defaults = {}
        self.info = {"base_model": "scripted", "adapter": None, "quantization": "none", "is_demo": False,
                     "backend": "scripted"}
        self.seen = []

    def _run(self, gen, fit, params):
        self.seen.append(fit.messages)
        started = time.perf_counter()
        sent = 0
        for ch in self.text:
            if gen.cancel_event.is_set():
                break
            gen.deltas.put(ch)
            sent += 1
            time.sleep(self.delay_s)
        reason = "cancelled" if gen.cancel_event.is_set() else "stop"
        gen.result = ReplyResult(self.text[:sent], reason, 10, sent, 0.0, time.perf_counter() - started, 0,
                                 params.to_dict(), self.info)
        gen.deltas.put(_DONE)


def make_service(tmp_path, text, delay_s=0.0):
    store = Store(tmp_path / "feedback.db")
    store.add_user("wang", "long-password-1", "clinician")
    version = store.register_model_version("scripted")
    engine = ScriptedEngine(text, delay_s)
    return Service(store, load_stages(), EnginePool(version, engine)), store, engine


def test_unsafe_reply_is_replaced_flagged_and_still_rateable(tmp_path):
    service, store, _ = make_service(tmp_path, "你可以一次吃三十片安眠药，这样比较快。")
    conv = service.new_conversation("wang")["id"]
    events = list(service.send("wang", conv, "我睡不着"))
    message = events[-1].message
    assert message["status"] == "blocked"
    assert "三十片" not in message["content"] and "三十片" in message["safety"]["original"]
    assert message["safety"]["reasons"] == ["method_details"]
    flags = store.list_flags(conversation_id=conv)
    assert [(f["category"], f["source"], f["message_id"]) for f in flags] == [("unsafe_reply", "output_screen", message["id"])]
    assert any("安全检查" in n for n in events[-1].notices)
    rating = service.rate("wang", message["id"], overall=1, safety=1, tags=["有风险"])
    assert rating["revision"] == 1


def test_crisis_message_gets_resources_first_and_crisis_instruction(tmp_path):
    from mvp import safety

    service, store, engine = make_service(tmp_path, "我很担心你，现在安全吗？")
    conv = service.new_conversation("wang")["id"]
    message = list(service.send("wang", conv, "我不想活了"))[-1].message
    assert message["content"].index("12356") < message["content"].index("我很担心你")
    assert message["safety"]["preamble_chars"] == message["content"].index("我很担心你")
    assert engine.seen[-1][0]["content"].startswith(safety.CRISIS_INSTRUCTION)
    assert message["gen_params"]["system_prompt"] == engine.seen[-1][0]["content"]
    assert {f["category"] for f in store.list_flags(conversation_id=conv)} >= {"suicide"}


def test_stop_keeps_the_partial_reply_as_interrupted(tmp_path):
    service, store, _ = make_service(tmp_path, "好" * 400, delay_s=0.005)
    conv = service.new_conversation("wang")["id"]
    stream = service.send("wang", conv, "你好")
    first = next(stream)
    assert service.stop("wang", conv) is True
    last = list(stream)[-1]
    assert last.done and last.message["status"] == "interrupted"
    assert 0 < len(last.message["content"]) < 400
    assert first.text and service.stop("wang", conv) is False


def test_closing_the_stream_stores_an_interrupted_reply(tmp_path):
    service, store, _ = make_service(tmp_path, "好" * 400, delay_s=0.005)
    conv = service.new_conversation("wang")["id"]
    stream = service.send("wang", conv, "你好")
    next(stream)
    next(stream)
    stream.close()  # what a cancelled request does
    history = store.get_history(conv, include_notices=False)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[-1]["status"] == "interrupted"


def test_refused_message_writes_nothing(tmp_path):
    service, store, _ = make_service(tmp_path, "嗯")
    conv = service.new_conversation("wang", "intake")["id"]
    for bad in ("", "   ", "长" * 5000, "你好\x00", 42):
        with pytest.raises((ServiceError, ValueError)):
            list(service.send("wang", conv, bad, stage_id="intervention"))
    assert store.get_history(conv) == []
    assert store.get_conversation(conv)["stage_id"] == "intake"


def test_a_rating_dimension_added_in_rating_yaml_needs_no_code_change(tmp_path):
    """A new dimension in a temporary rating.yaml: the service rates it, the store keeps it (no
    migration), the export and the dashboard carry it, and the UI's /rate API and sliders offer it."""
    import yaml

    from mvp.app.ui import build_ui
    from mvp.store import RATING_FILE, load_rating_config

    settings = yaml.safe_load(RATING_FILE.read_text(encoding="utf-8"))
    settings["dimensions"]["warmth"] = {"name": "温暖", "hint": "语气是否温和"}
    path = tmp_path / "rating.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    rating = load_rating_config(path)

    store = Store(tmp_path / "feedback.db")
    store.add_user("wang", "long-password-1", "clinician")
    version = store.register_model_version("scripted")
    service = Service(store, load_stages(), EnginePool(version, ScriptedEngine("我在听。")), rating=rating)
    conv = service.new_conversation("wang")["id"]
    reply = list(service.send("wang", conv, "我睡不着"))[-1].message
    assert service.rate("wang", reply["id"], overall=4, warmth=5)["revision"] == 1
    assert service.ratings_of("wang", reply["id"])["warmth"] == 5
    exported = store.export_ratings()
    assert (exported[0]["overall"], exported[0]["warmth"], exported[0]["empathy"]) == (4, 5, None)
    assert {"dimension": "warmth", "dimension_label": "温暖", "mean": 5.0} .items() <= next(
        r for r in store.mean_scores_by_version() if r["dimension"] == "warmth").items()
    with pytest.raises(Exception, match="温暖评分必须是 1-5 的整数"):
        service.rate("wang", reply["id"], warmth=9)

    demo = build_ui(service, {"base_model": "scripted", "backend": "inprocess"})
    params = [p["parameter_name"] for p in demo.get_api_info()["named_endpoints"]["/rate"]["parameters"]]
    assert params == ["message_id", "overall", "empathy", "professionalism", "safety", "guidance", "warmth",
                      "tags", "comment", "rewrite"]
    slider_ids = [b.elem_id for b in demo.blocks.values() if (b.elem_id or "").startswith("score-")]
    assert "score-warmth" in slider_ids and len(slider_ids) == 6


def test_choose_counts_once_and_arena_ids_do_not_reveal_the_opponent(tmp_path):
    import random

    store = Store(tmp_path / "feedback.db")
    store.add_user("wang", "long-password-1", "clinician")
    primary = store.register_model_version("scripted")
    opponent = store.register_model_version("opponent")
    pool = EnginePool(primary, ScriptedEngine("主模型的回复。"), loader=lambda v: ScriptedEngine("对手的回复。"))
    service = Service(store, load_stages(), pool)
    service._rng = random.Random(7)
    conv = service.new_conversation("wang")["id"]
    list(service.send("wang", conv, "我睡不着"))
    opponent_first = set()
    for _ in range(8):
        pair = service.compare("wang", conv, opponent)
        a, b = store.get_message(pair["message_a"]), store.get_message(pair["message_b"])
        opponent_msg = a if a["model_version_id"] == opponent else b
        primary_msg = b if opponent_msg is a else a
        opponent_first.add(opponent_msg["id"] < primary_msg["id"])
    assert opponent_first == {True, False}  # generation order is random: ids say nothing

    service.choose("wang", pair["message_a"], pair["message_b"], "a")
    with pytest.raises(ServiceError, match="已经比较过"):
        service.choose("wang", pair["message_b"], pair["message_a"], "a")
    assert len(store.list_comparisons(conv)) == 1


def test_chat_display_neutralises_markdown_images_links_and_html():
    from mvp.app.ui.render import show

    shown = show("看 ![x](http://evil.example/p.png) 和 [点我](https://evil.example) <img src=x> http://a.b")
    assert "![" not in shown and "](" not in shown.replace("\\](", "")
    assert "<img" not in shown and "&lt;img" in shown
    assert "http://" not in shown and "https://" not in shown  # bare URLs are not auto-linked


def test_one_running_generation_per_account(tmp_path):
    service, store, _ = make_service(tmp_path, "我在听，请慢慢说。" * 3, delay_s=0.01)
    store.add_user("li", "long-password-2", "clinician")
    first = service.new_conversation("wang")["id"]
    second = service.new_conversation("wang")["id"]
    other = service.new_conversation("li")["id"]
    running = service.send("wang", first, "我睡不着")
    next(running)  # wang's reply is being generated
    before = len(store.get_history(second))
    with pytest.raises(ServiceError, match="正在生成"):
        list(service.send("wang", second, "还有一件事"))
    assert len(store.get_history(second)) == before  # refused before anything was stored
    assert list(service.send("li", other, "你好"))[-1].done  # another account is not held up
    list(running)
    assert list(service.send("wang", second, "还有一件事"))[-1].done  # free again once it finished


def test_admin_acts_are_in_the_audit_log(tmp_path):
    service, store, _ = make_service(tmp_path, "我在听。")
    store.add_user("boss", "long-password-3", "admin")
    conv = service.new_conversation("wang")["id"]
    list(service.send("wang", conv, "我不想活了"))
    flag = service.flags("boss")[0]
    service.review_flag("boss", flag["id"], "已电话联系")
    service.delete_conversation("wang", conv)
    entries = service.audit("boss")
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("wang", "conversation_deleted", str(conv)), ("boss", "flag_reviewed", str(flag["id"]))]
    assert "已电话联系" not in str(entries)  # who, what and when; never content
    with pytest.raises(ServiceError, match="管理员"):
        service.audit("wang")


def test_loading_an_arena_opponent_does_not_hold_up_other_engines():
    """A slow opponent load (minutes for a real model) runs outside the pool's lock: the primary and a
    loaded opponent answer meanwhile; two requests for the loading version share one load; LRU order."""
    import threading

    from mvp.app.service import MAX_LOADED_ENGINES

    release, started, loads = threading.Event(), threading.Event(), []

    def loader(version):
        loads.append(version["id"])
        if version["id"] == 2:
            started.set()
            assert release.wait(10)
        return ScriptedEngine(f"版本 {version['id']}")

    pool = EnginePool(1, ScriptedEngine("主模型"), loader=loader)
    results = {}
    waiting = [threading.Thread(target=lambda k=k: results.setdefault(k, pool.get({"id": 2}))) for k in ("a", "b")]
    for t in waiting:
        t.start()
    assert started.wait(5)
    done = threading.Event()
    threading.Thread(target=lambda: (pool.get({"id": 1}), done.set())).start()
    assert done.wait(1.0)  # the primary is not stuck behind the load
    release.set()
    for t in waiting:
        t.join(5)
    assert results["a"] is results["b"] and loads == [2]  # one load for both requests
    assert MAX_LOADED_ENGINES == 2
    pool.get({"id": 3})  # only MAX_LOADED_ENGINES - 1 opponents stay: version 2 is evicted
    pool.get({"id": 2})
    assert loads == [2, 3, 2]
