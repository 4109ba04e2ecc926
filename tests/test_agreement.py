"""Rating assignments and agreement (issue 16): batches with overlap, blind tasks, permissions, gold,
Krippendorff's alpha checked on the textbook example and against a hand computation, the CLI."""

import json
import math

import pytest

from mvp.app.service import EnginePool, Service, ServiceError
from mvp.counsel.stages import load_stages
from mvp.store import LATEST_VERSION, PermissionDeniedError, Store, StoreError, ValidationError
from mvp.store import agreement
from mvp.store.assignments import plan_assignments
from tests.test_service import ScriptedEngine
from train import agreement as agreement_cli

PW = "long-password-1"
NAN = math.nan


def table(rows):
    """Reliability data as raters x units (NaN = missing) -> rater -> unit -> value."""
    return {f"r{i}": {u: v for u, v in enumerate(row) if not math.isnan(v)} for i, row in enumerate(rows)}


def test_krippendorff_2011_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
    # 12 units, missing data. The paper gives nominal alpha 0.743 and interval alpha 0.849.
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
            [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]]
    nominal = agreement.alpha(table(data), "nominal")
    interval = agreement.alpha(table(data), "interval")
    assert round(nominal["alpha"], 3) == 0.743
    assert round(interval["alpha"], 3) == 0.849
    assert nominal["n_items"] == 11 and nominal["n_values"] == 40  # unit 12 has one value: not pairable


def hand_alpha(values_by_unit, delta):
    """Krippendorff's alpha from the coincidence-matrix formula, written out:
    D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} delta(v_i, v_j)
    D_e = 1/(n (n - 1)) * sum_{i != j over all pairable values} delta(v_i, v_j);  alpha = 1 - D_o / D_e."""
    units = [vs for vs in values_by_unit if len(vs) >= 2]
    pooled = [v for vs in units for v in vs]
    n = len(pooled)
    d_o = sum(sum(delta(a, b) for i, a in enumerate(vs) for j, b in enumerate(vs) if i != j) / (len(vs) - 1)
              for vs in units) / n
    d_e = sum(delta(a, b) for i, a in enumerate(pooled) for j, b in enumerate(pooled) if i != j) / (n * (n - 1))
    return 1 - d_o / d_e


def interval_delta(a, b):
    return (a - b) ** 2


def nominal_delta(a, b):
    return 0 if a == b else 1


@pytest.fixture
def setup(tmp_path):
    store = Store(tmp_path / "feedback.db")
    for name in ("owner", "li", "wang", "zhao"):
        store.add_user(name, PW, "clinician")
    store.add_user("boss", PW, "admin")
    version = store.register_model_version("scripted")
    service = Service(store, load_stages(), EnginePool(version, ScriptedEngine("谢谢你愿意说出来，我们慢慢聊。")))
    cid = store.create_conversation("owner", "intake", version)
    replies = []
    for i in range(4):
        u = store.add_user_message(cid, f"来访者第 {i} 句")
        replies.append(store.add_assistant_message(cid, u, f"回复 {i}"))
    return service, store, cid, replies


def test_migration_adds_the_tables(setup):
    _, store, _, _ = setup
    assert store.schema_version == LATEST_VERSION
    db = store.database()
    try:
        assert {"rating_batches", "rating_tasks"} <= set(db.table_names())
        assert db.execute("SELECT MAX(version) FROM migrations").fetchone()[0] == LATEST_VERSION
    finally:
        db.conn.close()


def test_plan_gives_k_distinct_raters_avoids_the_owner_and_balances_load():
    items = [(i, "owner") for i in range(1, 7)]
    plan, owner_used = plan_assignments(items, ["a", "b", "c", "owner"], 2)
    assert owner_used == 0 and len(plan) == 12
    for mid in range(1, 7):
        raters = [r for m, r in plan if m == mid]
        assert len(set(raters)) == 2 and "owner" not in raters
    loads = [sum(r == x for _, r in plan) for x in ("a", "b", "c")]
    assert max(loads) - min(loads) <= 1
    plan, owner_used = plan_assignments([(1, "a")], ["a", "b"], 2)  # unavoidable: said so
    assert sorted(r for _, r in plan) == ["a", "b"] and owner_used == 1


def rate_all(service, rater, scores_by_reply, thumbs_by_reply):
    while (task := service.next_task(rater)) is not None:
        mid = service.store.get_task(task["task_id"])["message_id"]
        service.submit_task(rater, task["task_id"], scores={"overall": scores_by_reply[mid]},
                            thumb=thumbs_by_reply[mid])


def test_three_raters_through_the_service_agree_with_a_hand_computed_alpha(setup):
    service, store, cid, replies = setup
    batch = service.create_batch_from_conversations("boss", "三人重叠", [cid], 3, ["li", "wang", "zhao"])
    assert batch == {"batch_id": batch["batch_id"], "items": 4, "tasks": 12, "owner_assigned": 0}
    overall = {"li": [4, 2, 5, 1], "wang": [4, 3, 5, 2], "zhao": [3, 2, 4, 1]}
    thumbs = {"li": [1, 1, -1, 1], "wang": [1, -1, -1, 1], "zhao": [1, 1, -1, -1]}
    for rater in overall:
        rate_all(service, rater, dict(zip(replies, overall[rater])), dict(zip(replies, thumbs[rater])))
    report = service.agreement("boss", batch["batch_id"])
    measures = {m["id"]: m for m in report["measures"]}
    by_unit = [[overall[r][u] for r in overall] for u in range(4)]
    assert hand_alpha(by_unit, interval_delta) == pytest.approx(1 - (2 / 3) / 4)  # D_o = 8/12, D_e = 528/132
    assert measures["overall"]["alpha"] == pytest.approx(hand_alpha(by_unit, interval_delta), abs=1e-4)
    assert (measures["overall"]["n_items"], measures["overall"]["n_values"], measures["overall"]["n_raters"]) == (4, 12, 3)
    thumb_units = [[thumbs[r][u] for r in thumbs] for u in range(4)]
    assert measures["thumbs"]["alpha"] == pytest.approx(hand_alpha(thumb_units, nominal_delta), abs=1e-4)
    assert measures["empathy"]["alpha"] is None and "重叠不足" in measures["empathy"]["note"]
    # li against the median (= mean) of the other two: a two-coder alpha, by hand as well
    li = next(r for r in report["raters"] if r["rater"] == "li")["measures"]["overall"]
    pairs = [[overall["li"][u], (overall["wang"][u] + overall["zhao"][u]) / 2] for u in range(4)]
    assert li["alpha"] == pytest.approx(hand_alpha(pairs, interval_delta), abs=1e-4) and li["n_items"] == 4
    # the judgements are ordinary rows: the export sees three ratings per reply
    assert len(store.latest_ratings(message_id=replies[0])) == 3
    assert {r["assignee"]: r["done"] for r in service.batch_progress("boss", batch["batch_id"])} == \
        {"li": 4, "wang": 4, "zhao": 4}


def test_tasks_are_blind_and_only_assigned_replies_of_others_can_be_rated(setup):
    service, store, cid, replies = setup
    service.create_batch_from_conversations("boss", "b", [cid], 1, ["li"])
    task = service.next_task("li")
    assert set(task) == {"task_id", "batch_id", "batch_name", "position", "reply", "context", "total", "done", "skipped"}
    assert task["reply"] == "回复 0" and task["context"] == [{"role": "user", "content": "来访者第 0 句"}]
    assert (task["total"], task["done"]) == (4, 0)
    with pytest.raises(ServiceError):  # a normal rating of someone else's conversation stays refused
        service.rate("li", replies[0], overall=4)
    with pytest.raises(PermissionDeniedError):  # wang was not assigned this task
        service.submit_task("wang", task["task_id"], scores={"overall": 3})
    service.submit_task("li", task["task_id"], scores={"overall": 4}, tags=["说教"])
    with pytest.raises(ValidationError):
        service.submit_task("li", task["task_id"], scores={"overall": 4})
    service.skip_task("li", service.next_task("li")["task_id"])
    summary = service.my_tasks("li")[0]
    assert (summary["total"], summary["done"], summary["skipped"], summary["open"]) == (4, 1, 1, 2)


@pytest.mark.parametrize("kwargs", [
    {"scores": [4]}, {"scores": {"overall": 6}}, {"scores": {"overall": "4"}}, {"scores": {"warmth": 3}},
    {"thumb": 2}, {"thumb": True}, {"tags": ["不存在的标签"]}, {"comment": "x" * 5000}, {},
])
def test_hostile_task_input_is_refused_and_writes_nothing(setup, kwargs):
    service, store, cid, _ = setup
    service.create_batch_from_conversations("boss", "b", [cid], 1, ["li"])
    task = service.next_task("li")
    with pytest.raises((ServiceError, StoreError)):
        service.submit_task("li", task["task_id"], **kwargs)
    assert store.latest_ratings(rater="li") == [] and store.get_thumb(store.get_task(task["task_id"])["message_id"], "li") == 0
    assert store.get_task(task["task_id"])["status"] == "open"


def test_bad_batches_are_refused_whole(setup):
    service, store, cid, replies = setup
    with pytest.raises(ServiceError):
        service.create_batch_from_conversations("li", "b", [cid], 1, ["wang"])  # not an admin
    with pytest.raises(ServiceError):
        service.create_batch_from_conversations("boss", "b", [cid], 3, ["li", "wang"])  # k > raters
    with pytest.raises(StoreError):
        store.create_rating_batch("b", "boss", 1, [replies[0], replies[0] - 1], ["li"])  # a user message
    with pytest.raises(StoreError):
        store.create_rating_batch("b", "boss", 1, replies, ["li", "nobody"])
    with pytest.raises(ValidationError):
        store.create_rating_batch("b", "boss", 1, replies, ["li"], gold={replies[0]: {"thumb": 5}})
    assert store.list_rating_batches() == []


def test_gold_items_are_reported_per_clinician(setup):
    service, store, cid, replies = setup
    store.create_rating_batch("g", "boss", 2, replies[:2], ["li", "wang"],
                              gold={replies[0]: {"thumb": -1}, str(replies[1]): {"min_overall": 4}})
    rate_all(service, "li", {replies[0]: 2, replies[1]: 5}, {replies[0]: -1, replies[1]: 1})
    rate_all(service, "wang", {replies[0]: 4, replies[1]: 2}, {replies[0]: 1, replies[1]: 1})
    gold = {g["rater"]: g for g in service.agreement("boss")["gold"]}
    assert (gold["li"]["agree"], gold["li"]["checks"]) == (2, 2)
    assert (gold["wang"]["agree"], gold["wang"]["checks"], gold["wang"]["rate"]) == (0, 2, 0.0)


def test_batch_from_a_model_version_over_sample_cases(setup):
    service, store, _, _ = setup
    seen = []
    batch = service.create_batch_from_version("boss", "版本 1 · 个案", None, 2, ["li", "wang"], n_cases=2,
                                              turns_per_case=2, progress=lambda d, t, _: seen.append((d, t)))
    assert batch["items"] == 4 and seen[-1] == (4, 4)
    source = store.list_rating_batches()[0]["source"]
    assert source["kind"] == "model_version" and source["model_version_id"] == service.engines.primary_id
    made = [c for c in store.list_conversations() if c["case_id"]]
    assert len(made) == 2 and {c["user_name"] for c in made} == {"boss"}
    assert service.conversations("li") == []  # never in a clinician's own list
    task = service.next_task("li")
    assert task["reply"] == "谢谢你愿意说出来，我们慢慢聊。" and task["context"][0]["role"] == "user"
    with pytest.raises(ServiceError):
        service.create_batch_from_version("boss", "x", None, 1, ["li"], n_cases=30, turns_per_case=3)


def test_not_enough_overlap_and_identical_values_are_said_not_nan():
    lone = agreement.alpha({"a": {1: 4.0}, "b": {2: 3.0}}, "interval")
    assert lone["alpha"] is None and lone["n_items"] == 0 and "not enough overlap" in lone["note"]
    same = agreement.alpha({"a": {1: 4.0, 2: 4.0}, "b": {1: 4.0, 2: 4.0}}, "interval")
    assert same["alpha"] is None and "undefined" in same["note"]


def test_pairwise_choices_of_several_raters_are_nominal_units():
    rows = [{"id": 1, "message_a": 10, "message_b": 11, "choice": "a", "rater": "x"},
            {"id": 2, "message_a": 11, "message_b": 10, "choice": "b", "rater": "y"},  # same winner, shown swapped
            {"id": 3, "message_a": 20, "message_b": 21, "choice": "b", "rater": "x"},
            {"id": 4, "message_a": 20, "message_b": 21, "choice": "a", "rater": "y"}]
    t = agreement.comparison_table(rows)
    assert t["x"][(10, 11)] == t["y"][(10, 11)] and t["x"][(20, 21)] != t["y"][(20, 21)]
    assert agreement.alpha(t, "nominal")["alpha"] == pytest.approx(
        hand_alpha([[0, 0], [1, 0]], nominal_delta), abs=1e-4)


def test_cli_prints_json_and_a_table(setup, capsys):
    service, store, cid, replies = setup
    batch = service.create_batch_from_conversations("boss", "b", [cid], 2, ["li", "wang"])
    rate_all(service, "li", dict(zip(replies, [4, 2, 5, 1])), dict(zip(replies, [1, 1, 1, 1])))
    rate_all(service, "wang", dict(zip(replies, [5, 2, 4, 1])), dict(zip(replies, [1, -1, 1, 1])))
    assert agreement_cli.main(["--db", store.path, "--json", "--batch", str(batch["batch_id"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["measures"][0]["id"] == "overall" and report["measures"][0]["n_items"] == 4
    assert agreement_cli.main(["--db", store.path]) == 0
    assert "总体" in capsys.readouterr().out
    assert agreement_cli.main(["--db", store.path, "--batch", "99"]) == 2
    assert agreement_cli.main(["--db", str(store.path) + ".missing"]) == 2
