"""Load: 16 concurrent gradio_client sessions against the real app, each chatting and rating.

    .venv/bin/python -m pytest tests/test_load.py -s      # about a minute; -s prints the latency table

Every session logs in as its own clinician, starts a conversation, sends TURNS messages (streamed
replies, iterated as a browser would receive them) and rates every reply. Afterwards: no request
failed, every rating the app acknowledged is in feedback.db exactly as sent, each conversation holds
its turns in order, and `PRAGMA integrity_check` is ok. The p50/p99 of each endpoint (as the client
sees it, queueing included) are printed and written to test-artifacts/load.json.

Model turns share one generation slot (the app's `concurrency_id="model"`, limit 1), so /chat
latency under load is mostly queueing behind the other sessions' replies; ratings and history run
beside them (the app's default concurrency).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict

import pytest
from gradio_client import Client

from tests.reliability import ARTIFACTS, PASSWORD, integrity, percentiles, rows, seed_accounts, start_app

pytestmark = pytest.mark.slow

SESSIONS = 16
TURNS = 3
REPLY_TOKENS = 8
SESSION_TIMEOUT_S = 120
MESSAGES = ["我最近总是睡不着，白天也没精神。", "工作压力很大，领导总是批评我。", "我不知道该怎么和家人说这些。",
            "有时候觉得自己什么都做不好。"]


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    db = tmp / "feedback.db"
    seed_accounts(db, {f"c{i:02d}": "clinician" for i in range(SESSIONS)})
    live = start_app(tiny_model_dir, db, tmp / "app.log", REPLY_TOKENS)
    yield live
    live.stop()


def session(url: str, index: int, barrier: threading.Barrier, out: dict) -> None:
    """One clinician: log in, start a conversation, TURNS streamed turns, a rating of every reply."""
    rng = random.Random(index)
    name = f"c{index:02d}"
    timings, acks, replies = out["timings"], out["acks"], out["replies"]

    def timed(endpoint, fn):
        start = time.perf_counter()
        result = fn()
        with out["lock"]:
            timings[endpoint].append(time.perf_counter() - start)
        return result

    client = None
    try:
        barrier.wait(timeout=SESSION_TIMEOUT_S)
        client = timed("login", lambda: Client(url, auth=(name, PASSWORD), verbose=False))
        conv = timed("/new_conversation", lambda: client.predict(stage_id="intake", case_id="",
                                                                  api_name="/new_conversation"))
        for turn in range(TURNS):
            message = f"{MESSAGES[(index + turn) % len(MESSAGES)]}（{name}-{turn}）"
            start = time.perf_counter()
            job = client.submit(conversation_id=conv["id"], message=message, stage_id="", api_name="/chat")
            first, final = None, None
            for update in job:
                if first is None:
                    first = time.perf_counter() - start
                final = update
            total = time.perf_counter() - start
            with out["lock"]:
                timings["/chat (first update)"].append(first if first is not None else total)
                timings["/chat"].append(total)
            if not (isinstance(final, dict) and final.get("done") and final.get("message_id")):
                raise AssertionError(f"{name} turn {turn}: no final reply, got {final!r}")
            replies.append((name, conv["id"], message, final["message_id"]))
            scores = {d: rng.randint(1, 5) for d in ("overall", "empathy", "professionalism", "safety", "guidance")}
            comment = f"load {name} turn {turn}"
            ack = timed("/rate", lambda: client.predict(message_id=final["message_id"], **scores, tags=["过长"],
                                                        comment=comment, rewrite=None, api_name="/rate"))
            acks.append({"id": ack["id"], "revision": ack["revision"], "message_id": final["message_id"],
                         "rater": name, "comment": comment, **scores})
        history = timed("/history", lambda: client.predict(conversation_id=conv["id"], api_name="/history"))
        out["histories"][name] = (conv["id"], history)
    except Exception as exc:  # recorded, asserted by the test
        out["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        if client is not None:
            client.close()


def test_sixteen_sessions_chat_and_rate(app):
    out = {"timings": defaultdict(list), "acks": [], "replies": [], "histories": {}, "errors": [],
           "lock": threading.Lock()}
    barrier = threading.Barrier(SESSIONS)
    threads = [threading.Thread(target=session, args=(app.url, i, barrier, out), daemon=True) for i in range(SESSIONS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SESSION_TIMEOUT_S)
    wall = time.perf_counter() - started
    stuck = [t.name for t in threads if t.is_alive()]

    report = {
        "sessions": SESSIONS, "turns_per_session": TURNS, "reply_tokens": REPLY_TOKENS, "wall_s": round(wall, 2),
        "requests": sum(len(v) for k, v in out["timings"].items() if k != "/chat (first update)"),
        "errors": out["errors"], "stuck_sessions": stuck,
        "endpoints": {k: percentiles(v) for k, v in sorted(out["timings"].items())},
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\nload: {SESSIONS} sessions x {TURNS} turns, {report['requests']} requests in {wall:.1f} s, "
          f"{len(out['errors'])} errors")
    print(f"{'endpoint':<24}{'n':>5}{'p50 s':>9}{'p99 s':>9}{'max s':>9}")
    for endpoint, p in report["endpoints"].items():
        print(f"{endpoint:<24}{p['n']:>5}{p['p50_s']:>9.3f}{p['p99_s']:>9.3f}{p['max_s']:>9.3f}")

    assert not stuck, f"sessions still running after {SESSION_TIMEOUT_S} s: {stuck}"
    assert out["errors"] == []
    assert len(out["acks"]) == SESSIONS * TURNS

    # Every acknowledged rating is stored exactly as sent (and nothing else was).
    stored = {r["id"]: r for r in rows(app.db, "SELECT * FROM ratings")}
    assert len(stored) == len(out["acks"])
    for ack in out["acks"]:
        row = stored.get(ack["id"])
        assert row is not None, f"acknowledged rating {ack['id']} is missing"
        for key in ("message_id", "rater", "comment", "revision", "overall", "empathy", "professionalism",
                    "safety", "guidance"):
            assert row[key] == ack[key], (key, row, ack)
        assert json.loads(row["tags"]) == ["过长"] and row["is_latest"] == 1

    # Each conversation holds its own turns, in order, user / assistant alternating.
    for name, conv_id, message, reply_id in out["replies"]:
        bot = rows(app.db, "SELECT m.conversation_id, m.role, p.content AS asked FROM messages m "
                           "JOIN messages p ON p.id = m.parent_id WHERE m.id = ?", (reply_id,))[0]
        assert (bot["conversation_id"], bot["role"], bot["asked"]) == (conv_id, "assistant", message)
    for name, (conv_id, history) in out["histories"].items():
        assert [m["role"] for m in history] == ["user", "assistant"] * TURNS
        assert all(f"（{name}-" in m["content"] for m in history if m["role"] == "user")
    owners = rows(app.db, "SELECT user_name, COUNT(*) AS n FROM conversations GROUP BY user_name")
    assert {r["user_name"]: r["n"] for r in owners} == {f"c{i:02d}": 1 for i in range(SESSIONS)}
    assert integrity(app.db) == "ok"
    assert app.proc.poll() is None
