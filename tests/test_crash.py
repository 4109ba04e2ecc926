"""Crash: `kill -9` the app while clients write ratings, restart it on the same feedback.db.

    .venv/bin/python -m pytest tests/test_crash.py -s      # about a minute

Writers (gradio_client sessions) rate replies as fast as the app acknowledges them, and one more
session chats; once enough ratings are acknowledged the server gets SIGKILL mid-stream. Then a new
server starts on the same file, and: every rating and reply a client saw acknowledged is there with
the values sent, `PRAGMA integrity_check` is ok, no foreign key is dangling, and the app serves again
(a new chat and a rating of it). Writes that were in flight at the kill may or may not be there
(the client never heard back), but never half: each row is whole or absent.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from gradio_client import Client

from mvp.store import Store
from tests.reliability import PASSWORD, integrity, rows, seed_accounts, start_app

pytestmark = pytest.mark.slow

WRITERS = 6
REPLIES_PER_WRITER = 5
KILL_AFTER_ACKS = 30
REPLY_TOKENS = 4
WAIT_S = 90


def seed_replies(store: Store, user: str, n: int) -> list[int]:
    """A conversation with n assistant replies to rate, written through the Store (not timed)."""
    conv = store.create_conversation(user, "intake")
    ids = []
    for i in range(n):
        parent = store.add_user_message(conv, f"第{i}句：最近心情不好。")
        ids.append(store.add_assistant_message(conv, parent, f"听起来你这段时间很辛苦（{i}）。",
                                               gen_params={"seed": i}, metrics={"new_tokens": 8}))
    return ids


def writer(url: str, name: str, targets: list[int], index: int, stop: threading.Event, out: dict) -> None:
    client = None
    try:
        client = Client(url, auth=(name, PASSWORD), verbose=False)
        out["ready"].release()
        n = 0
        while not stop.is_set():
            message_id = targets[n % len(targets)]
            comment = f"crash w{index} #{n}"
            overall = 1 + (n + index) % 5
            ack = client.predict(message_id=message_id, overall=overall, empathy=None, professionalism=None,
                                 safety=None, guidance=None, tags=[], comment=comment, rewrite=None,
                                 api_name="/rate")
            with out["lock"]:
                out["acks"].append({"id": ack["id"], "revision": ack["revision"], "message_id": message_id,
                                    "rater": name, "overall": overall, "comment": comment})
            n += 1
    except Exception as exc:  # expected once the server is killed
        out["errors"].append(f"{name}: {type(exc).__name__}")
    finally:
        if client is not None:
            client.close()


def chatter(url: str, stop: threading.Event, out: dict) -> None:
    client = None
    try:
        client = Client(url, auth=("chat", PASSWORD), verbose=False)
        conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
        out["ready"].release()
        n = 0
        while not stop.is_set():
            reply = client.predict(conversation_id=conv, message=f"第{n}次：我还是睡不着。", stage_id="", api_name="/chat")
            with out["lock"]:
                out["chats"].append((conv, reply["message_id"], reply["user_message_id"], reply["text"]))
            n += 1
    except Exception as exc:
        out["errors"].append(f"chat: {type(exc).__name__}")
    finally:
        if client is not None:
            client.close()


def test_kill_dash_nine_loses_no_acknowledged_rating(tiny_model_dir, tmp_path):
    db = tmp_path / "feedback.db"
    names = [f"w{i}" for i in range(WRITERS)]
    store = seed_accounts(db, {**{n: "clinician" for n in names}, "chat": "clinician"})
    targets = {n: seed_replies(store, n, REPLIES_PER_WRITER) for n in names}
    app = start_app(tiny_model_dir, db, tmp_path / "app-1.log", REPLY_TOKENS)

    out = {"acks": [], "chats": [], "errors": [], "lock": threading.Lock(), "ready": threading.Semaphore(0)}
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(app.url, n, targets[n], i, stop, out), daemon=True)
               for i, n in enumerate(names)]
    threads.append(threading.Thread(target=chatter, args=(app.url, stop, out), daemon=True))
    try:
        for t in threads:
            t.start()
        for _ in threads:
            assert out["ready"].acquire(timeout=WAIT_S), f"a client could not start: {out['errors']}"
        deadline = time.monotonic() + WAIT_S
        while len(out["acks"]) < KILL_AFTER_ACKS and time.monotonic() < deadline and not out["errors"]:
            time.sleep(0.05)
        assert len(out["acks"]) >= KILL_AFTER_ACKS and not out["errors"], (len(out["acks"]), out["errors"])
        app.stop(kill=True)  # SIGKILL while the writers are mid-request
        assert app.proc.returncode == -9
        stop.set()
        with out["lock"]:
            acks, chats = list(out["acks"]), list(out["chats"])
    finally:
        stop.set()
        if app.proc.poll() is None:
            app.stop(kill=True)
    for t in threads:
        t.join(timeout=30)
    print(f"\ncrash: killed after {len(acks)} acknowledged ratings and {len(chats)} replies; "
          f"client errors after the kill: {len(out['errors'])}")

    # The file as the next start finds it: intact, every acknowledged write present and whole.
    assert integrity(db) == "ok"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    restarted = start_app(tiny_model_dir, db, tmp_path / "app-2.log", REPLY_TOKENS)
    try:
        stored = {r["id"]: r for r in rows(db, "SELECT * FROM ratings")}
        missing = [a for a in acks if a["id"] not in stored]
        assert not missing, f"{len(missing)} acknowledged ratings lost: {missing[:5]}"
        for ack in acks:
            row = stored[ack["id"]]
            assert (row["message_id"], row["rater"], row["overall"], row["comment"], row["revision"]) == (
                ack["message_id"], ack["rater"], ack["overall"], ack["comment"], ack["revision"])
        in_flight = len(stored) - len(acks)
        assert 0 <= in_flight <= WRITERS  # at most one unacknowledged write per writer
        for row in stored.values():  # in flight or not, no row is half-written
            assert row["comment"].startswith("crash w") and 1 <= row["overall"] <= 5
        # one latest revision per (message, rater), revisions without gaps
        revisions = rows(db, "SELECT message_id, rater, GROUP_CONCAT(revision) AS revs, SUM(is_latest) AS latest "
                             "FROM (SELECT * FROM ratings ORDER BY revision) GROUP BY message_id, rater")
        for r in revisions:
            revs = [int(x) for x in r["revs"].split(",")]
            assert revs == list(range(1, len(revs) + 1)) and r["latest"] == 1, r
        for conv, reply_id, user_id, text in chats:
            bot = rows(db, "SELECT * FROM messages WHERE id = ?", (reply_id,))
            assert bot and bot[0]["content"] == text and bot[0]["parent_id"] == user_id
        print(f"crash: {len(acks)} acknowledged ratings all present; {in_flight} in-flight ratings also committed")

        # The restarted app serves: a new chat and a rating of it.
        client = Client(restarted.url, auth=("w0", PASSWORD), verbose=False)
        try:
            conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
            reply = client.predict(conversation_id=conv, message="重启后还能用吗？", stage_id="", api_name="/chat")
            ack = client.predict(message_id=reply["message_id"], overall=5, comment="after restart", api_name="/rate")
        finally:
            client.close()
        assert rows(db, "SELECT json_extract(scores, '$.overall') AS overall, comment FROM ratings WHERE id = ?", (ack["id"],)) == [
            {"overall": 5, "comment": "after restart"}]
        assert integrity(db) == "ok"
    finally:
        restarted.stop()
