"""Bad input against every named API endpoint of the real app (property-based, hypothesis).

    .venv/bin/python -m pytest tests/test_fuzz_api.py -s      # about 2 minutes; -s shows the counts

Each endpoint gets wrong types, huge and empty strings, control characters, lone UTF-16 surrogates
("\\ud800"), HTML and script, out-of-range / NaN / infinite scores and unknown ids, mixed with valid
values. Every call must end in one of two ways:
  - refused: an error with a clear message (no traceback text, not the app's generic "内部错误"
    for an exception it did not expect), and NOT ONE row changed in feedback.db (a hash of every
    row of every written table is compared);
  - accepted: only the rows that endpoint is meant to write changed (e.g. /rate: one rating).
The server must stay up and answer a valid call afterwards.

The calls go over the `/gradio_api/call/<name>` HTTP route (tests.reliability.RawCaller) because
gradio_client refuses to encode NaN or a lone surrogate although any other HTTP client can send them;
gradio_client turns the same error event into `AppError(message)`, which
`test_gradio_client_sees_app_error` checks on a fixed set of bad inputs.

The budget is fixed (MAX_EXAMPLES per endpoint plus hand-picked EXPLICIT cases, derandomized, no
shrinking) so the run is repeatable and bounded; the number of inputs tried is printed and written to
test-artifacts/fuzz.json with every finding and its exact input. Bugs already reported (KNOWN_BUGS)
are recorded there without failing the endpoint tests; each has its own xfail(strict) regression test.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from mvp.counsel.cases import load_cases
from tests.reliability import (
    ARTIFACTS,
    ENDPOINTS,
    PASSWORD,
    RawCaller,
    clean_error,
    counts,
    digest,
    rows,
    seed_accounts,
    start_app,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40
REPLY_TOKENS = 4  # replies are capped so that an accepted /chat costs a fraction of a second
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: every finding is recorded as sent
    suppress_health_check=list(HealthCheck),
)
TRIED: Counter = Counter()
ACCEPTED: Counter = Counter()
FINDINGS: list[dict] = []


# -- strategies -------------------------------------------------------------------------------
class Ref:
    """A value known only once the app runs (a conversation id, a message id...), by name."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Big:
    """A long string, built when sent (a short repr keeps hypothesis' reports readable)."""

    def __init__(self, char: str, n: int):
        self.char, self.n = char, n

    def __repr__(self) -> str:
        return f"<{self.char!r} * {self.n}>"


SPECIAL_STRINGS = [
    "", " ", "\n\t ", "\x00", "a\x1bb", "\x7f", "\x85", "\u2028", "\u202e反转", "\ufeff", "\ud800", "x\udfffy",
    "\udc80\ud800", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "{{7*7}}", "${jndi:x}",
    "'; DROP TABLE ratings; --", "%s%n%x", "../../etc/passwd", "🙂" * 50, "NaN", "1", "-1", "null", "true",
    Big("长", 4001), Big("x", 100_000),
    Big("我", 1500),  # under the store's 4000-character limit, over the test model's 1024-token context
]
UNKNOWN_IDS = [0, -1, 999_999, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63)]
BAD_NUMBERS = [0, -1, 6, 2.5, 1e308, -0.0, math.nan, math.inf, -math.inf, 2**53 + 1]

odd_chars = st.one_of(
    st.characters(categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
    st.characters(),
    st.sampled_from("<>&\"'/\\{}%长情绪"),
)
strings = st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(odd_chars, max_size=40))
numbers = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaf = st.one_of(st.none(), st.booleans(), numbers, strings)
nasty = st.one_of(
    leaf,
    st.lists(leaf, max_size=3),
    st.dictionaries(st.text(max_size=5), leaf, max_size=2),
)


def refs(*names: str):
    return st.sampled_from([Ref(n) for n in names])


def ids(*names: str):
    return st.one_of(refs(*names), st.sampled_from(UNKNOWN_IDS), nasty)


conversation = ids("conv", "conv_crisis", "conv_screen", "foreign_conv")
message_ids = ids("reply", "reply2", "cmp_a", "cmp_b", "user_msg", "foreign_reply")
stage = st.one_of(st.sampled_from(["", "intake", "assessment", "intervention", "consolidation", "no_such"]), nasty)
score = st.one_of(st.integers(1, 5), st.none(), st.sampled_from(["5", True, False]), nasty)
TAGS = ["说教", "过长", "过短"]
tags = st.one_of(st.none(), st.lists(st.one_of(st.sampled_from(TAGS + ["不存在的标签", ""]), strings), max_size=3), nasty)
free_text = st.one_of(st.none(), st.sampled_from(["共情到位", "听起来你很辛苦。"]), strings, nasty)

# Positional data for each endpoint, in register_api's parameter order.
ARGS = {
    "/stages": st.lists(nasty, max_size=2),  # no parameters: extra values must be ignored or refused
    "/new_conversation": st.tuples(stage, st.one_of(st.sampled_from(["", Ref("case"), "no_such_case"]), nasty)),
    "/chat": st.tuples(conversation, st.one_of(st.sampled_from(["你好", "我最近总是睡不着"]), strings, nasty), stage),
    "/regenerate": st.tuples(conversation),
    "/stop": st.tuples(conversation),
    "/history": st.tuples(conversation),
    "/rate": st.tuples(message_ids, score, score, score, score, score, tags, free_text, free_text),
    "/thumb": st.tuples(message_ids, st.one_of(st.sampled_from([1, -1, 0]), nasty)),
    "/compare": st.tuples(conversation, st.one_of(st.sampled_from([0, 1]), st.sampled_from(UNKNOWN_IDS), nasty)),
    "/choose": st.tuples(message_ids, message_ids,
                         st.one_of(st.sampled_from(["a", "b", "tie", "both_bad", "maybe", "A"]), nasty)),
    "/flags": st.tuples(st.one_of(st.booleans(), nasty)),
    "/review_flag": st.tuples(ids("flag"), free_text),
    "/start_screening": st.tuples(ids("throwaway", "foreign_conv"),
                                  st.one_of(st.sampled_from(["phq9", "gad7", "PHQ9", "no_such"]), nasty)),
    "/screening": st.tuples(conversation),
    "/correct_item": st.tuples(ids("assessment"), st.one_of(st.integers(0, 10), nasty), st.one_of(st.integers(-1, 4), nasty)),
    "/audit": st.tuples(st.one_of(st.integers(-5, 20_000), nasty)),
    "/delete_conversation": st.tuples(ids("throwaway", "foreign_conv")),
    "/conversations": st.tuples(st.one_of(st.integers(-5, 20_000), nasty)),
    "/review_queue": st.tuples(st.one_of(st.booleans(), nasty)),
    "/abandon_screening": st.tuples(ids("throwaway", "foreign_conv")),
    "/my_tasks": st.lists(nasty, max_size=2),
    "/next_task": st.tuples(ids("batch")),
    "/submit_task": st.tuples(ids("task", "task2", "foreign_task"),
                              st.one_of(st.none(), st.fixed_dictionaries({"overall": score}), nasty),
                              st.one_of(st.sampled_from([1, -1, 0]), nasty), tags, free_text, free_text),
    "/skip_task": st.tuples(ids("task2", "foreign_task")),
    "/create_batch": st.tuples(st.one_of(st.sampled_from(["第一轮"]), strings, nasty),
                               st.one_of(st.lists(conversation, max_size=2), nasty),
                               st.one_of(st.integers(-1, 3), nasty),
                               st.one_of(st.lists(st.sampled_from(["wang", "li", "boss", "expo", "nobody"]), max_size=3), nasty),
                               st.one_of(st.none(), nasty)),
    "/create_version_batch": st.tuples(st.one_of(strings, nasty), st.one_of(st.sampled_from([0, 999_999]), nasty),
                                       st.one_of(st.integers(-1, 3), nasty),
                                       st.one_of(st.lists(st.sampled_from(["li", "expo", "nobody"]), max_size=2), nasty),
                                       st.one_of(st.integers(-1, 2), nasty), st.one_of(st.integers(-1, 2), nasty)),
    "/batches": st.lists(nasty, max_size=2),
    "/batch_progress": st.tuples(ids("batch")),
    "/agreement": st.tuples(ids("batch")),
    "/memory": st.tuples(conversation),
    "/correct_summary": st.tuples(conversation, st.one_of(st.sampled_from(["主诉：失眠两个月。"]), strings, nasty)),
    "/answer_suggestion": st.tuples(conversation, st.one_of(st.booleans(), nasty)),
    "/new_session": st.tuples(ids("throwaway", "foreign_conv")),
}
ADMIN_ENDPOINTS = ("/flags", "/review_flag", "/audit", "/review_queue", "/create_batch", "/create_version_batch",
                   "/batches", "/batch_progress", "/agreement")

# What an accepted call may change: table -> allowed row-count delta (a set) or a predicate.
ANY_GROWTH = lambda d: d >= 0  # noqa: E731
NO_CHANGE: dict = {}
ACCEPTED_DELTAS = {
    "/stages": NO_CHANGE, "/history": NO_CHANGE, "/flags": NO_CHANGE, "/stop": NO_CHANGE, "/screening": NO_CHANGE,
    "/audit": NO_CHANGE, "/conversations": NO_CHANGE, "/review_queue": NO_CHANGE,
    "/abandon_screening": {},  # an update only
    "/new_conversation": {"conversations": {1}},
    "/chat": {"messages": {2}, "flags": ANY_GROWTH, "assessment_items": {0, 1}},  # a screening answer: +1 item
    "/regenerate": {"messages": {1}, "flags": ANY_GROWTH},
    "/compare": {"messages": {2}, "flags": ANY_GROWTH},
    "/rate": {"ratings": {1}},
    "/thumb": {"thumbs": {-1, 0, 1}},
    "/choose": {"comparisons": {1}},
    "/review_flag": {},  # an update only
    "/my_tasks": NO_CHANGE, "/next_task": NO_CHANGE, "/batches": NO_CHANGE, "/batch_progress": NO_CHANGE,
    "/agreement": NO_CHANGE,
    "/submit_task": {"ratings": {0, 1}, "thumbs": {0, 1}},  # and the task's status
    "/skip_task": {},  # an update only
    "/memory": NO_CHANGE,
    "/correct_summary": {"summaries": {1}},
    "/answer_suggestion": {"stage_events": {1}},  # and the stage when accepted
    "/new_session": {"conversations": {1}, "summaries": {0, 1}},
    "/create_batch": {"rating_batches": {1}, "rating_tasks": ANY_GROWTH},
    "/create_version_batch": {"conversations": ANY_GROWTH, "messages": ANY_GROWTH, "flags": ANY_GROWTH,
                              "rating_batches": {1}, "rating_tasks": ANY_GROWTH},
    "/start_screening": {"assessments": {1}, "messages": {2}},
    "/correct_item": {},  # an update only
    "/delete_conversation": {"conversations": {-1}, "deletion_log": {1}, "messages": lambda d: d <= 0,
                             "ratings": lambda d: d <= 0, "thumbs": lambda d: d <= 0,
                             "comparisons": lambda d: d <= 0, "flags": lambda d: d <= 0,
                             "assessments": lambda d: d <= 0, "assessment_items": lambda d: d <= 0},
}
READ_ONLY = ("/stages", "/history", "/flags", "/stop", "/screening", "/audit", "/conversations", "/review_queue",
             "/my_tasks", "/next_task", "/batches", "/batch_progress", "/agreement", "/memory")

# Hand-picked edge cases, always tried first (hypothesis' explicit phase), then MAX_EXAMPLES generated.
C, R = Ref("conv"), Ref("reply")
EXPLICIT = {
    "/stages": [[None], ["\ud800", 2**64]],
    "/new_conversation": [["\ud800", ""], ["", "\ud800"], ["<script>alert(1)</script>", ""], [None, None], [["intake"], {}]],
    "/chat": [[C, Big("我", 1500), ""], [C, "你好\x00", "intervention"], [C, "\ud800", ""], [C, "", ""], [C, None, ""],
              [C, "<img src=x onerror=alert(1)>", ""], [2**63, "你好", ""], [C, "你好", "\ud800"], [C, Big("x", 100_000), ""],
              [Ref("foreign_conv"), "你好", ""], [C, ["你好"], ""], [math.nan, "你好", ""]],
    "/regenerate": [[2**63], [-1], [Ref("foreign_conv")], [math.inf]],
    "/stop": [[2**63], [None], [Ref("foreign_conv")]],
    "/history": [[2**63], ["1"], [Ref("foreign_conv")], [True]],
    "/rate": [[R, math.nan, None, None, None, None, None, None, None], [R, math.inf, None, None, None, None, None, None, None],
              [R, 3, None, None, None, None, ["\ud800"], None, None], [R, 3, None, None, None, None, None, "\udc00", None],
              [R, None, None, None, None, None, None, None, None], [R, 3, 3, 3, 3, 3, ["不存在的标签"], None, None],
              [R, 3, None, None, None, None, None, Big("x", 100_000), None], [R, 3, None, None, None, None, None, None, Big("长", 4001)],
              [2**63, 3, None, None, None, None, None, None, None], [Ref("user_msg"), 3, None, None, None, None, None, None, None],
              [Ref("foreign_reply"), 3, None, None, None, None, None, None, None], [R, True, None, None, None, None, None, None, None]],
    "/thumb": [[R, 2], [R, True], [R, 1.0], [R, math.nan], [2**63, 1], [Ref("foreign_reply"), 1]],
    "/compare": [[C, 999_999], [C, 2**63], [2**63, 0], [Ref("foreign_conv"), 0], [C, "\ud800"]],
    "/choose": [[Ref("cmp_a"), Ref("cmp_a"), "a"], [Ref("cmp_a"), Ref("cmp_b"), "\ud800"], [Ref("cmp_a"), 2**63, "a"],
                [Ref("cmp_a"), Ref("foreign_reply"), "a"], [Ref("cmp_a"), Ref("cmp_b"), None]],
    "/flags": [[math.nan], ["\ud800"], [{"a": 1}]],
    "/review_flag": [[2**63, ""], [Ref("flag"), "\ud800"], [Ref("flag"), Big("x", 100_000)], [math.nan, None], [-1, None]],
    "/start_screening": [[Ref("throwaway"), ["phq9"]], [Ref("throwaway"), "\ud800"], [Ref("throwaway"), None],
                         [Ref("foreign_conv"), "phq9"], [Ref("conv_screen"), "phq9"], [Ref("throwaway"), "phq9"]],
    "/screening": [[2**63], [Ref("foreign_conv")], [Ref("conv_screen")], [None]],
    "/correct_item": [[Ref("assessment"), 1, 4], [Ref("assessment"), 1, math.nan], [Ref("assessment"), 99, 1],
                      [Ref("assessment"), 1, True], [2**63, 1, 1], [Ref("assessment"), "1", 1], [Ref("assessment"), 1, 2]],
    "/audit": [[0], [2**63], ["1"], [None], [math.nan]],
    "/delete_conversation": [[2**63], [Ref("foreign_conv")], [0], ["1"]],
    "/conversations": [[0], [2**63], ["1"], [None], [math.nan]],
    "/review_queue": [[math.nan], ["\ud800"], [{"a": 1}]],
    "/abandon_screening": [[2**63], [Ref("foreign_conv")], [Ref("throwaway")], [None]],
    "/my_tasks": [[None]],
    "/next_task": [[2**63], ["1"], [math.nan], [Ref("batch")]],
    "/submit_task": [[Ref("foreign_task"), {"overall": 3}, 0, None, None, None], [Ref("task"), [4], 0, None, None, None],
                     [Ref("task"), {"overall": 6}, 0, None, None, None], [Ref("task"), {"warmth": 3}, 0, None, None, None],
                     [Ref("task"), None, 2, None, None, None], [Ref("task"), None, math.nan, None, None, None],
                     [Ref("task"), None, 0, "过长", None, None], [Ref("task"), None, 0, None, 5, None],
                     [Ref("task"), {"overall": 3}, 0, None, Big("x", 100_000), None], [Ref("task"), None, 0, None, None, None],
                     [2**64, {"overall": 3}, 0, None, None, None], [Ref("task"), {"overall": 4}, 1, ["说教"], "好", None]],
    "/skip_task": [[Ref("foreign_task")], [2**63], ["1"]],
    "/create_batch": [["", [C], 1, ["li"], None], ["b", "1,2", 1, ["li"], None], ["b", [[1]], 1, ["li"], None],
                      ["b", [C], 2, ["li"], None], ["b", [C], 1, [["li"]], None], ["b", [C], 1, ["expo"], None],
                      ["b", [C], 1, ["li"], [1]], ["b", [C], 1, ["li"], {"²": {"thumb": 1}}],
                      ["b", [C], 1, ["li"], {"1": {"thumb": 5}}], ["b", [C], True, ["li"], None], ["b", [C], 1, ["li"], None]],
    "/create_version_batch": [["", 0, 1, ["li"], 1, 1], ["b", 0, 1, ["nobody"], 1, 1], ["b", 999_999, 1, ["li"], 1, 1],
                              ["b", 0, 1, ["li"], 100, 100], ["b", 0, 1, ["li"], True, 1], ["b", 0, 1, ["li"], 1, 1]],
    "/batches": [[None]],
    "/batch_progress": [[2**63], [math.nan], [Ref("batch")]],
    "/agreement": [[2**63], ["1"], [999_999], [Ref("batch")]],
    "/memory": [[2**63], ["1"], [Ref("foreign_conv")], [C]],
    "/correct_summary": [[C, ""], [C, "\ud800"], [C, "<script>alert(1)</script>主诉：失眠"], [C, Big("摘", 100_000)],
                         [C, None], [C, ["主诉"]], [Ref("foreign_conv"), "主诉"], [C, "主诉：失眠\x00"], [C, "主诉：失眠两个月。"]],
    "/answer_suggestion": [[C, "yes"], [C, 1], [C, None], [Ref("foreign_conv"), True], [2**63, False], [C, True]],
    "/new_session": [[Ref("foreign_conv")], [2**63], ["1"], [None], [Ref("throwaway")]],
}


# Bugs found by this file, by name -> a predicate on a finding. A finding that matches one is recorded
# in fuzz.json as known instead of failing the endpoint's test; each has its own regression test
# below (an xfail(strict=True) until its fix lands).
KNOWN_BUGS: dict = {}  # all four found so far are fixed; their regression tests are below


def known_bug(finding: dict) -> str | None:
    return next((name for name, matches in KNOWN_BUGS.items() if matches(finding)), None)


# -- the app and its fixture data -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    db = tmp / "feedback.db"
    seed_accounts(db)
    app = start_app(tiny_model_dir, db, tmp / "app.log", REPLY_TOKENS)
    wang = Client(app.url, auth=("wang", PASSWORD), verbose=False)
    li = Client(app.url, auth=("li", PASSWORD), verbose=False)
    boss = Client(app.url, auth=("boss", PASSWORD), verbose=False)
    conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    reply = wang.predict(conversation_id=conv, message="你好", stage_id="", api_name="/chat")
    reply2 = wang.predict(conversation_id=conv, message="我最近总是睡不着", stage_id="", api_name="/chat")
    pair = wang.predict(conversation_id=conv, opponent_version_id=0, api_name="/compare")
    crisis = wang.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    wang.predict(conversation_id=crisis, message="我真的不想活了，安眠药已经攒了很多。", stage_id="", api_name="/chat")
    foreign = li.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    foreign_reply = li.predict(conversation_id=foreign, message="你好", stage_id="", api_name="/chat")
    flag = rows(db, "SELECT id FROM flags WHERE conversation_id = ?", (crisis,))[0]["id"]
    screen = wang.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    assessment = wang.predict(conversation_id=screen, instrument="phq9", api_name="/start_screening")["assessment_id"]
    wang.predict(conversation_id=screen, message="完全没有", stage_id="", api_name="/chat")  # item 1 answered
    values = {
        "conv": conv, "conv_crisis": crisis, "foreign_conv": foreign, "reply": reply["message_id"],
        "reply2": reply2["message_id"], "user_msg": reply["user_message_id"], "cmp_a": pair["message_a"],
        "cmp_b": pair["message_b"], "foreign_reply": foreign_reply["message_id"], "flag": flag,
        "case": load_cases()[0].id, "conv_screen": screen, "assessment": assessment,
    }
    batch = boss.predict("fuzz", [conv], 1, ["wang"], None, api_name="/create_batch")["batch_id"]
    boss.predict("fuzz-li", [foreign], 1, ["li"], None, api_name="/create_batch")
    tasks = rows(db, "SELECT id, assignee FROM rating_tasks ORDER BY id")
    values.update(batch=batch, task=tasks[0]["id"], task2=tasks[1]["id"],
                  foreign_task=next(t["id"] for t in tasks if t["assignee"] == "li"))
    raw = {"wang": RawCaller(app.url, wang.cookies), "boss": RawCaller(app.url, boss.cookies)}
    started = time.monotonic()
    yield {"app": app, "db": db, "values": values, "raw": raw, "wang": wang}
    for caller in raw.values():
        caller.close()
    for c in (wang, li, boss):
        c.close()
    app.stop()
    fuzzed = {k: v for k, v in TRIED.items() if not k.startswith("gradio_client:")}
    report = {
        "max_examples_per_endpoint": MAX_EXAMPLES,
        "inputs_tried": dict(TRIED), "inputs_tried_total": sum(TRIED.values()),
        "property_inputs": sum(fuzzed.values()), "gradio_client_inputs": sum(TRIED.values()) - sum(fuzzed.values()),
        "accepted": dict(ACCEPTED), "refused": {k: TRIED[k] - ACCEPTED[k] for k in TRIED},
        "findings": FINDINGS, "seconds": round(time.monotonic() - started, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz.json").write_text(json.dumps(report, ensure_ascii=True, indent=1, default=repr))
    print(f"\nfuzz: {report['inputs_tried_total']} inputs tried: {report['property_inputs']} generated over "
          f"{len(fuzzed)} endpoints ({', '.join(f'{k} {v}' for k, v in sorted(fuzzed.items()))}) and "
          f"{report['gradio_client_inputs']} through gradio_client; "
          f"{sum(ACCEPTED.values())} accepted; {len(FINDINGS)} findings "
          f"({dict(Counter(f['known_bug'] or 'new' for f in FINDINGS))}) -> test-artifacts/fuzz.json")


def resolve(value, world):
    """Replace Refs by the live values; "throwaway" is a fresh conversation that may be deleted."""
    if isinstance(value, Ref):
        if value.name == "throwaway":
            kind, data = world["raw"]["wang"]("/new_conversation", ["", ""])
            assert kind == "complete", data
            return data[0]["id"]
        return world["values"][value.name]
    if isinstance(value, Big):
        return value.char * value.n
    if isinstance(value, (list, tuple)):
        return [resolve(v, world) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, world) for k, v in value.items()}
    return value


def error_message(value):
    return value.get("error") if isinstance(value, dict) else value


def check_accepted(endpoint: str, before: dict, after: dict, same_rows: bool) -> list[str]:
    problems = []
    if endpoint in READ_ONLY and not same_rows:
        problems.append("a read-only endpoint changed rows")
    rules = ACCEPTED_DELTAS[endpoint]
    for table in before:
        delta = after[table] - before[table]
        rule = rules.get(table)
        ok = delta == 0 if rule is None else (rule(delta) if callable(rule) else delta in rule)
        if not ok:
            problems.append(f"accepted call changed {table} by {delta:+d}")
    return problems


def call_and_check(world, endpoint: str, data: list) -> None:
    """One call; any violation is recorded in FINDINGS (with the exact input) and asserted later."""
    db, app = world["db"], world["app"]
    caller = world["raw"]["boss" if endpoint in ADMIN_ENDPOINTS else "wang"]
    data = resolve(data, world)
    before, before_hash = counts(db), digest(db)
    kind, value = caller(endpoint, data)
    after, after_hash = counts(db), digest(db)
    TRIED[endpoint] += 1
    problems = []
    if kind == "error":
        why = clean_error(error_message(value))
        if why:
            problems.append(why)
        if after_hash != before_hash:
            delta = {t: after[t] - before[t] for t in after if after[t] != before[t]}
            problems.append(f"a refused call changed feedback.db (row-count delta {delta or 'none: an update'})")
    elif kind == "complete":
        ACCEPTED[endpoint] += 1
        problems += check_accepted(endpoint, before, after, after_hash == before_hash)
    else:
        problems.append(f"no answer event: {kind} {value!r}")
    if app.proc.poll() is not None:
        problems.append(f"the server exited with {app.proc.returncode}")
    if problems:
        finding = {"endpoint": endpoint, "input": repr(data)[:600], "outcome": kind,
                   "message": repr(error_message(value))[:300], "problems": problems}
        finding["known_bug"] = known_bug(finding)
        FINDINGS.append(finding)


def assert_alive(world) -> None:
    assert world["app"].proc.poll() is None, "the server exited"
    kind, value = world["raw"]["wang"]("/stages", [])
    assert kind == "complete" and value[0][0]["id"] == "intake", (kind, value)


def endpoint_findings(endpoint: str) -> list[dict]:
    return [f for f in FINDINGS if f["endpoint"] == endpoint and not f["known_bug"]]


# -- wrong arity and the gradio_client view of the same errors -------------------------------------
def test_wrong_number_of_values_writes_nothing(world):
    """Too few values is refused by Gradio before our handler runs; too many are ignored."""
    db, raw = world["db"], world["raw"]["wang"]
    conv = world["values"]["conv"]
    before = digest(db)
    for endpoint, data in (("/chat", [conv]), ("/rate", [world["values"]["reply"]]), ("/thumb", []),
                           ("/choose", [1, 2]), ("/chat", "not a list")):
        kind, value = raw(endpoint, data)
        assert kind in ("error", "http"), (endpoint, data, kind, value)
    assert digest(db) == before
    assert_alive(world)


def test_gradio_client_sees_app_error(world):
    """gradio_client callers get AppError with the app's message (inputs it can encode)."""
    client, db, v = world["wang"], world["db"], world["values"]
    bad_calls = [
        ("/new_conversation", dict(stage_id="<script>alert(1)</script>", case_id="")),
        ("/new_conversation", dict(stage_id="", case_id="no_such_case")),
        ("/chat", dict(conversation_id=v["conv"], message="x" * 5_000_000, stage_id="")),
        ("/chat", dict(conversation_id=v["conv"], message="你好\x00", stage_id="")),
        ("/chat", dict(conversation_id="1 OR 1=1", message="你好", stage_id="")),
        ("/regenerate", dict(conversation_id=v["foreign_conv"])),
        ("/stop", dict(conversation_id=None)),
        ("/history", dict(conversation_id=[v["conv"]])),
        ("/rate", dict(message_id=v["reply"], overall=6)),
        ("/rate", dict(message_id=v["reply"], overall=2.5, tags="过长")),
        ("/rate", dict(message_id=v["user_msg"], overall=3)),
        ("/rate", dict(message_id=v["reply"], comment="\x1b[31m")),
        ("/thumb", dict(message_id=v["reply"], value=2)),
        ("/compare", dict(conversation_id=v["conv"], opponent_version_id=999_999)),
        ("/choose", dict(message_a=v["cmp_a"], message_b=v["cmp_a"], choice="a")),
        ("/choose", dict(message_a=v["cmp_a"], message_b=v["cmp_b"], choice="<b>a</b>")),
        ("/flags", dict(include_reviewed=True)),  # wang is not an admin
        ("/review_flag", dict(flag_id=v["flag"], note="")),
        ("/delete_conversation", dict(conversation_id=v["foreign_conv"])),
    ]
    before = digest(db)
    for api_name, kwargs in bad_calls:
        with pytest.raises(AppError) as info:
            client.predict(**kwargs, api_name=api_name)
        TRIED["gradio_client:" + api_name] += 1
        assert clean_error(info.value.message) is None, (api_name, kwargs, info.value.message)
    assert digest(db) == before
    assert_alive(world)


# -- regression tests for the bugs found (see KNOWN_BUGS) ----------------------------------------------
@pytest.mark.parametrize("api_name, kwargs", [
    ("/history", {"conversation_id": 2**63}),
    ("/rate", {"message_id": 2**64, "overall": 3}),
])
def test_id_beyond_sqlite_integer_is_refused_cleanly(world, api_name, kwargs):
    with pytest.raises(AppError) as info:
        world["wang"].predict(**kwargs, api_name=api_name)
    assert clean_error(info.value.message) is None, info.value.message


def test_message_over_the_context_writes_nothing(world):
    client, db = world["wang"], world["db"]
    conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    before = digest(db)
    with pytest.raises(AppError) as info:
        client.predict(conversation_id=conv, message="我" * 1500, stage_id="", api_name="/chat")
    assert "太长" in info.value.message
    assert digest(db) == before
    assert [m["role"] for m in rows(db, "SELECT role FROM messages WHERE conversation_id = ?", (conv,))] == []


def test_refused_message_does_not_change_the_stage(world):
    client, db = world["wang"], world["db"]
    conv = client.predict(stage_id="intake", case_id="", api_name="/new_conversation")["id"]
    with pytest.raises(AppError):
        client.predict(conversation_id=conv, message="你好\x00", stage_id="intervention", api_name="/chat")
    assert rows(db, "SELECT stage_id FROM conversations WHERE id = ?", (conv,))[0]["stage_id"] == "intake"


def test_screening_instrument_of_wrong_type_is_refused_cleanly(world):
    client = world["wang"]
    conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    with pytest.raises(AppError) as info:
        client.predict(conversation_id=conv, instrument=["phq9"], api_name="/start_screening")
    assert clean_error(info.value.message) is None, info.value.message


# The property tests come last: a generated id may delete one of the fixture conversations, and
# /delete_conversation is the last endpoint fuzzed.
# -- the property tests: one per endpoint ---------------------------------------------------------
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_input_is_refused_cleanly(world, endpoint):
    @FUZZ
    @given(data=ARGS[endpoint])
    def run(data):
        call_and_check(world, endpoint, list(data))

    for data in EXPLICIT[endpoint]:
        run = example(data=data)(run)
    run()
    assert_alive(world)
    found = endpoint_findings(endpoint)
    assert not found, json.dumps(found, ensure_ascii=False, indent=1)


def test_every_named_endpoint_was_fuzzed(world):
    api = world["wang"].view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == set(ENDPOINTS) == set(ARGS)
