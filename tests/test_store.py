"""Tests for mvp.store: schema and migrations, every API call, validation leaving no rows, cascade
deletion, revisions, alternatives, exports, dashboard figures and concurrent writers.

Run: python -m pytest tests/test_store.py -q
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mvp.store import (
    LATEST_VERSION,
    MAX_MESSAGE_CHARS,
    NotFoundError,
    PermissionDeniedError,
    Store,
    StoreError,
    ValidationError,
    migrate,
    passwords,
    schema,
)

REPO = Path(__file__).resolve().parents[1]
TABLES = ("users", "model_versions", "conversations", "messages", "ratings", "thumbs", "comparisons",
          "flags", "assessments", "assessment_items", "deletion_log")


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hashes carry their own parameters, so a cheaper cost keeps tests fast without changing logic.
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**10)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "feedback.db")
    yield s
    s.close()


@pytest.fixture
def seeded(store: Store) -> dict[str, Any]:
    """Accounts of every role, one model version, one conversation with one answered turn."""
    store.add_user("li", "password-li", "clinician")
    store.add_user("wang", "password-wang", "clinician")
    store.add_user("boss", "password-boss", "admin")
    store.add_user("guest", "password-guest", "demo")
    mv = store.register_model_version("models/demo", label="demo v1")
    conv = store.create_conversation("li", "intake", mv)
    user_msg = store.add_user_message(conv, "最近总是睡不着，心里很乱")
    reply = store.add_assistant_message(conv, user_msg, "听起来这段时间你很辛苦。", gen_params={"seed": 1},
                                        metrics={"new_tokens": 12, "ttft_s": 0.1})
    return {"store": store, "mv": mv, "conv": conv, "user_msg": user_msg, "reply": reply}


def counts(store: Store) -> dict[str, int]:
    db = store.database()
    try:
        return {t: db[t].count for t in TABLES}
    finally:
        db.close()


def query(store: Store, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- schema and migrations ------------------------------------------------------------------------
def test_fresh_database_has_every_migration_wal_and_foreign_keys(store: Store) -> None:
    db = store.database()
    try:
        assert set(TABLES) | {"migrations"} <= set(db.table_names())
        assert [r["version"] for r in db["migrations"].rows] == list(range(1, LATEST_VERSION + 1))
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert db.journal_mode == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        db.close()
    assert store.schema_version == LATEST_VERSION


def test_opening_an_old_database_migrates_it_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = schema.connect(str(path))
    assert migrate(conn, target=1) == 1
    conn.execute("INSERT INTO users VALUES ('li', 'clinician', 'x', 0, '2026-01-01', '2026-01-01')")
    conn.execute("INSERT INTO conversations (user_name, stage_id, created_at, updated_at)"
                 " VALUES ('li', 'intake', '2026-01-01', '2026-01-01')")
    conn.close()
    assert "flags" not in sqlite3.connect(path).execute(
        "SELECT group_concat(name) FROM sqlite_master WHERE type='table'").fetchone()[0]

    store = Store(path)
    assert store.schema_version == LATEST_VERSION
    assert store.get_user("li")["role"] == "clinician"
    assert store.add_flag(1, "suicide", ["不想活了"]) == 1
    assert [r[0] for r in query(store, "SELECT version FROM migrations")] == list(range(1, LATEST_VERSION + 1))
    indexes = {r[0] for r in query(store, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ratings_latest" in indexes and "ratings_rater" not in indexes  # migration 5 dropped it
    Store(path).close()  # opening again is a no-op


def test_database_newer_than_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO migrations VALUES (999, 'future', 'x')")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="比本程序支持的版本"):
        Store(path)


def test_migration_6_moves_score_columns_into_json(tmp_path: Path) -> None:
    """Ratings written under the old schema (one column per dimension) keep every score."""
    path = tmp_path / "old.db"
    conn = schema.connect(str(path))
    assert migrate(conn, target=5) == 5
    now = "2026-01-01T00:00:00.000+00:00"
    conn.execute("INSERT INTO users VALUES ('li', 'clinician', 'x', 0, ?, ?)", (now, now))
    conn.execute("INSERT INTO conversations (id, user_name, stage_id, created_at, updated_at)"
                 " VALUES (1, 'li', 'intake', ?, ?)", (now, now))
    conn.execute("INSERT INTO messages (id, conversation_id, role, content, stage_id, created_at)"
                 " VALUES (1, 1, 'user', 'hi', 'intake', ?)", (now,))
    conn.execute("INSERT INTO messages (id, conversation_id, role, content, stage_id, parent_id, created_at)"
                 " VALUES (2, 1, 'assistant', 'hello', 'intake', 1, ?)", (now,))
    conn.execute("INSERT INTO ratings (message_id, rater, revision, is_latest, overall, safety, tags, created_at)"
                 " VALUES (2, 'li', 1, 1, 3, 5, '[]', ?)", (now,))
    conn.close()
    store = Store(path)
    assert store.schema_version == LATEST_VERSION
    rating = store.get_rating(2, "li")
    assert (rating["overall"], rating["safety"], rating["empathy"]) == (3, 5, None)
    assert query(store, "SELECT scores FROM ratings") == [('{"overall":3,"safety":5}',)]


def test_failing_migration_leaves_database_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.db"
    Store(path).close()
    broken = schema.Migration(LATEST_VERSION + 1, "broken", ("CREATE TABLE half_done (x)", "NOT SQL AT ALL"))
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(schema, "LATEST_VERSION", LATEST_VERSION + 1)
    with pytest.raises(StoreError):
        Store(path)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION


def test_path_must_be_a_file_in_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Store(":memory:")
    with pytest.raises(StoreError, match="目录不存在"):
        Store(tmp_path / "missing" / "f.db")


def test_no_ip_address_columns_anywhere(store: Store) -> None:
    db = store.database()
    try:
        for table in db.table_names():
            for column in db[table].columns_dict:
                assert "ip" not in column.lower().split("_"), (table, column)
                assert "address" not in column.lower(), (table, column)
    finally:
        db.close()


# -- users ----------------------------------------------------------------------------------------
def test_users_add_get_list_count_and_hash(store: Store) -> None:
    user = store.add_user("李医生", "correct horse", "clinician")
    assert user["name"] == "李医生" and user["role"] == "clinician" and user["disabled"] is False
    store.add_user("admin", "correct horse", "admin")
    assert [u["name"] for u in store.list_users()] == ["李医生", "admin"]
    assert store.count_users() == 2
    assert "password_hash" not in store.get_user("admin")
    assert store.get_user("nobody") is None
    hashes = [r[0] for r in query(store, "SELECT password_hash FROM users ORDER BY name")]
    assert hashes[0] != hashes[1]  # same password, different salt
    assert all(h.startswith("scrypt$") and "correct horse" not in h for h in hashes)


def test_authenticate(store: Store) -> None:
    store.add_user("li", "password-li", "clinician")
    assert store.authenticate("li", "password-li") is True
    assert store.authenticate("li", "password-LI") is False
    assert store.authenticate("nobody", "password-li") is False
    assert store.authenticate("", "") is False
    assert store.authenticate(None, 123) is False  # type: ignore[arg-type]
    assert store.authenticate("li", "x" * 10_000) is False
    store.disable_user("li")
    assert store.authenticate("li", "password-li") is False
    assert store.count_users(enabled_only=True) == 0
    store.enable_user("li")
    assert store.authenticate("li", "password-li") is True
    store.set_password("li", "new-password")
    assert store.authenticate("li", "new-password") and not store.authenticate("li", "password-li")


def test_verify_password_rejects_malformed_hashes() -> None:
    good = passwords.hash_password("password-1")
    assert passwords.verify_password("password-1", good)
    for bad in ("", "scrypt$1$2", "md5$1$1$1$AA==$AA==", good.replace("scrypt$1024", "scrypt$99999999999")):
        assert passwords.verify_password("password-1", bad) is False


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [
        ("", "password-1", "clinician", "用户名不能为空"),
        ("x" * 65, "password-1", "clinician", "用户名过长"),
        ("li\n", "password-1", "clinician", "控制字符"),
        (" li", "password-1", "clinician", "首尾不能有空格"),
        ("li", "short", "clinician", "密码太短"),
        ("li", "pass\x00word-1", "clinician", "控制字符"),
        ("li", "password-1", "root", "角色必须是"),
        (42, "password-1", "clinician", "用户名必须是文本"),
    ],
)
def test_add_user_validation_writes_nothing(store: Store, name: Any, password: Any, role: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.add_user(name, password, role)
    assert store.count_users() == 0


def test_duplicate_and_unknown_users(store: Store) -> None:
    store.add_user("li", "password-1")
    with pytest.raises(ValidationError, match="用户名已存在"):
        store.add_user("li", "password-2")
    for call in (store.disable_user, store.enable_user):
        with pytest.raises(NotFoundError, match="用户不存在"):
            call("nobody")
    with pytest.raises(NotFoundError):
        store.set_password("nobody", "password-1")


# -- model versions -------------------------------------------------------------------------------
def test_model_versions_are_idempotent(store: Store) -> None:
    a = store.register_model_version("models/demo")
    assert store.register_model_version("models/demo", label="other label") == a
    b = store.register_model_version("models/demo", adapter="runs/dpo-1/adapter", parent_id=a,
                                     data_manifest={"pairs": 30}, metrics={"ppl": 119.0})
    c = store.register_model_version("qwen", backend="openai", served_name="dpo-1", base_url="http://x/v1")
    assert len({a, b, c}) == 3
    version = store.get_model_version(b)
    assert version["parent_id"] == a and version["data_manifest"] == {"pairs": 30}
    assert version["label"] == "models/demo+adapter (none)"
    store.set_model_version_metrics(b, {"ppl": 100.5})
    assert store.get_model_version(b)["metrics"] == {"ppl": 100.5}
    assert [v["id"] for v in store.list_model_versions()] == [a, b, c]


def test_model_version_errors(store: Store) -> None:
    with pytest.raises(ValidationError, match="推理后端"):
        store.register_model_version("m", backend="vllm")
    with pytest.raises(ValidationError, match="NaN"):
        store.register_model_version("m", metrics={"loss": math.nan})
    with pytest.raises(NotFoundError, match="父模型版本不存在"):
        store.register_model_version("m", parent_id=99)
    with pytest.raises(NotFoundError):
        store.get_model_version(99)
    with pytest.raises(NotFoundError):
        store.set_model_version_metrics(99, {})
    assert counts(store)["model_versions"] == 0


# -- conversations and messages -------------------------------------------------------------------
def test_conversation_basics(seeded: dict[str, Any]) -> None:
    store, conv = seeded["store"], seeded["conv"]
    info = store.get_conversation(conv)
    assert info["user_name"] == "li" and info["is_demo"] is False and info["message_count"] == 2
    assert info["title"] == "最近总是睡不着，心里很乱"
    store.set_stage(conv, "assessment")
    assert store.get_conversation(conv)["stage_id"] == "assessment"
    u2 = store.add_user_message(conv, "还是睡不着")
    assert store.get_message(u2)["stage_id"] == "assessment"
    assert store.get_message(seeded["user_msg"])["stage_id"] == "intake"
    store.set_title(conv, "失眠")
    assert store.get_conversation(conv)["title"] == "失眠"

    demo = store.create_conversation("guest", "intake", case_id="case-7")
    assert store.get_conversation(demo)["is_demo"] is True  # demo accounts always make demo data
    assert [c["id"] for c in store.list_conversations()] == [demo, conv]
    assert [c["id"] for c in store.list_conversations(include_demo=False)] == [conv]
    assert [c["id"] for c in store.list_conversations(user="li")] == [conv]
    assert store.list_conversations(limit=1, offset=1)[0]["id"] == conv


def test_conversation_errors(seeded: dict[str, Any]) -> None:
    store = seeded["store"]
    before = counts(store)
    with pytest.raises(NotFoundError, match="用户不存在"):
        store.create_conversation("nobody", "intake")
    with pytest.raises(NotFoundError, match="模型版本不存在"):
        store.create_conversation("li", "intake", 99)
    with pytest.raises(ValidationError, match="阶段不能为空"):
        store.create_conversation("li", "")
    with pytest.raises(ValidationError, match="演示标记"):
        store.create_conversation("li", "intake", is_demo="yes")  # type: ignore[arg-type]
    store.disable_user("wang")
    with pytest.raises(PermissionDeniedError, match="账户已停用"):
        store.create_conversation("wang", "intake")
    with pytest.raises(NotFoundError, match="对话不存在"):
        store.get_conversation(999)
    with pytest.raises(NotFoundError):
        store.set_stage(999, "intake")
    assert counts(store) == before


def test_message_validation_writes_nothing(seeded: dict[str, Any]) -> None:
    store, conv, user_msg, reply = seeded["store"], seeded["conv"], seeded["user_msg"], seeded["reply"]
    other = store.create_conversation("li", "intake")
    other_msg = store.add_user_message(other, "你好")
    before = counts(store)
    bad_calls = [
        (ValidationError, "最多 4000", lambda: store.add_user_message(conv, "好" * (MAX_MESSAGE_CHARS + 1))),
        (ValidationError, "消息不能为空", lambda: store.add_user_message(conv, "   ")),
        (ValidationError, "必须是文本", lambda: store.add_user_message(conv, None)),
        (ValidationError, "控制字符", lambda: store.add_user_message(conv, "a\x00b")),
        (ValidationError, "对话 ID", lambda: store.add_user_message("1", "hi")),
        (NotFoundError, "对话不存在", lambda: store.add_user_message(999, "hi")),
        (ValidationError, "不属于对话", lambda: store.add_assistant_message(conv, other_msg, "x")),
        (ValidationError, "必须回应一条用户消息", lambda: store.add_assistant_message(conv, reply, "x")),
        (NotFoundError, "消息不存在", lambda: store.add_assistant_message(conv, 999, "x")),
        (ValidationError, "回复状态", lambda: store.add_assistant_message(conv, user_msg, "x", status="ok")),
        (ValidationError, "生成参数", lambda: store.add_assistant_message(conv, user_msg, "x", gen_params=[1])),
        (ValidationError, "NaN", lambda: store.add_assistant_message(
            conv, user_msg, "x", metrics={"ttft_s": float("nan")})),
        (NotFoundError, "模型版本不存在", lambda: store.add_assistant_message(
            conv, user_msg, "x", model_version_id=99)),
    ]
    for error, message, call in bad_calls:
        with pytest.raises(error, match=message):
            call()
    assert counts(store) == before


def test_reply_metadata_round_trips(seeded: dict[str, Any]) -> None:
    store, conv, user_msg = seeded["store"], seeded["conv"], seeded["user_msg"]
    reply = store.get_message(seeded["reply"])
    assert reply["role"] == "assistant" and reply["parent_id"] == user_msg
    assert reply["model_version_id"] == seeded["mv"] and reply["gen_params"] == {"seed": 1}
    assert reply["metrics"]["new_tokens"] == 12 and reply["status"] == "complete" and reply["is_active"]
    stopped = store.add_assistant_message(conv, user_msg, "", status="interrupted",
                                          safety={"categories": [], "evidence": []})
    message = store.get_message(stopped)
    assert message["content"] == "" and message["status"] == "interrupted"
    assert message["safety"] == {"categories": [], "evidence": []}


def test_alternatives_and_active_path(seeded: dict[str, Any]) -> None:
    store, conv, u1, r1a = seeded["store"], seeded["conv"], seeded["user_msg"], seeded["reply"]
    u2 = store.add_user_message(conv, "第二句")
    r2 = store.add_assistant_message(conv, u2, "第二句的回复")
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1a, u2, r2]

    # A compare pair generated inactive: the path is unchanged until one is chosen.
    r2b = store.add_assistant_message(conv, u2, "候选", make_active=False)
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1a, u2, r2]
    assert store.count_alternatives(u2) == 2
    assert [m["id"] for m in store.list_alternatives(r2)] == [r2, r2b]
    assert [m["id"] for m in store.list_alternatives(u2)] == [r2, r2b]
    store.set_active(r2b)
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1a, u2, r2b]
    assert [m["is_active"] for m in store.list_alternatives(u2)] == [False, True]

    # Regenerating an earlier turn switches branch: later turns stay with the reply they followed.
    r1b = store.add_assistant_message(conv, u1, "第一句的另一个回复")
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1b]
    u3 = store.add_user_message(conv, "接着 r1b 说")
    assert store.get_message(u3)["parent_id"] == r1b
    assert [m["id"] for m in store.get_path(u3)] == [u1, r1b, u3]
    store.set_active(r1a)
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1a, u2, r2b]
    assert [m["id"] for m in store.get_path(r2)] == [u1, r1a, u2, r2]  # what r2 was generated from

    with pytest.raises(ValidationError, match="只有模型回复"):
        store.set_active(u1)
    with pytest.raises(NotFoundError):
        store.set_active(999)
    with pytest.raises(NotFoundError):
        store.count_alternatives(999)
    # The one-active-reply invariant also holds in the database itself.
    active = query(store, "SELECT parent_id, COUNT(*) FROM messages WHERE role='assistant' AND is_active=1"
                          " GROUP BY parent_id HAVING COUNT(*) > 1")
    assert active == []


def test_notices_are_shown_but_not_context(seeded: dict[str, Any]) -> None:
    store, conv, u1, r1 = seeded["store"], seeded["conv"], seeded["user_msg"], seeded["reply"]
    notice = store.add_notice(conv, "较早的对话已省略")
    u2 = store.add_user_message(conv, "继续")
    assert store.get_message(u2)["parent_id"] == r1  # not the notice
    assert [m["id"] for m in store.get_history(conv)] == [u1, r1, notice, u2]
    assert [m["id"] for m in store.get_history(conv, include_notices=False)] == [u1, r1, u2]
    assert store.get_conversation(conv)["message_count"] == 3
    with pytest.raises(ValidationError, match="只能评价模型回复"):
        store.add_rating(notice, "li", overall=3)


# -- ratings, thumbs, comparisons -----------------------------------------------------------------
def test_rating_revisions(seeded: dict[str, Any]) -> None:
    store, reply = seeded["store"], seeded["reply"]
    first = store.add_rating(reply, "li", overall=3, empathy=4, tags=["过长", "说教", "过长"],
                             comment="有点长", allowed_tags=["过长", "说教", "跑题"])
    second = store.add_rating(reply, "li", overall=4, rewrite="更好的回复：我在听。", comment="")
    other = store.add_rating(reply, "wang", safety=5)
    assert (first["revision"], second["revision"], other["revision"]) == (1, 2, 1)
    latest = store.get_rating(reply, "li")
    assert latest["id"] == second["id"] and latest["overall"] == 4 and latest["empathy"] is None
    assert latest["comment"] is None and latest["rewrite"] == "更好的回复：我在听。"
    history = store.rating_history(reply, "li")
    assert [h["revision"] for h in history] == [1, 2] and history[0]["tags"] == ["过长", "说教"]
    assert [h["is_latest"] for h in history] == [False, True]
    assert {(r["rater"], r["revision"]) for r in store.latest_ratings(message_id=reply)} == {("li", 2), ("wang", 1)}
    assert [r["rater"] for r in store.latest_ratings(rater="wang")] == ["wang"]
    assert len(store.latest_ratings(conversation_id=seeded["conv"])) == 2
    assert store.get_rating(reply, "boss") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overall": 7}, "总体评分必须是 1-5 的整数，收到 7"),
        ({"empathy": 0}, "共情评分必须是 1-5 的整数"),
        ({"safety": True}, "安全性评分必须是 1-5 的整数，收到 True"),
        ({"guidance": 3.0}, "引导性评分必须是 1-5 的整数，收到 3.0"),
        ({"professionalism": "4"}, "专业性评分"),
        ({"overall": float("nan")}, "总体评分"),
        ({}, "评分为空"),
        ({"comment": "   "}, "评分为空"),
        ({"tags": "过长"}, "标签必须是文本列表"),
        ({"tags": ["x" * 33]}, "标签过长"),
        ({"tags": ["未知"], "allowed_tags": ["过长"]}, "未知标签：未知"),
        ({"tags": [f"t{i}" for i in range(21)]}, "标签过多"),
        ({"comment": "x" * 2001}, "评语过长"),
        ({"overall": 3, "rewrite": "x" * (MAX_MESSAGE_CHARS + 1)}, "改写回复过长"),
    ],
)
def test_bad_ratings_write_nothing(seeded: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    store = seeded["store"]
    with pytest.raises(ValidationError, match=message):
        store.add_rating(seeded["reply"], "li", **kwargs)
    assert counts(store)["ratings"] == 0


def test_who_and_what_can_be_rated(seeded: dict[str, Any]) -> None:
    store, reply = seeded["store"], seeded["reply"]
    with pytest.raises(PermissionDeniedError, match="演示账户不能评分"):
        store.add_rating(reply, "guest", overall=5)
    with pytest.raises(NotFoundError, match="用户不存在"):
        store.add_rating(reply, "nobody", overall=5)
    with pytest.raises(ValidationError, match="只能评价模型回复，消息 .* 是 user 消息"):
        store.add_rating(seeded["user_msg"], "li", overall=5)
    with pytest.raises(NotFoundError, match="消息不存在：999"):
        store.add_rating(999, "li", overall=5)
    with pytest.raises(ValidationError, match="消息 ID"):
        store.add_rating("3", "li", overall=5)  # type: ignore[arg-type]
    store.disable_user("wang")
    with pytest.raises(PermissionDeniedError, match="账户已停用"):
        store.add_rating(reply, "wang", overall=5)
    assert counts(store)["ratings"] == 0
    # A blocked reply can still be rated: it is a valuable negative example.
    blocked = store.add_assistant_message(seeded["conv"], seeded["user_msg"], "已拦截", status="blocked")
    assert store.add_rating(blocked, "boss", safety=1)["revision"] == 1


def test_thumbs(seeded: dict[str, Any]) -> None:
    store, reply = seeded["store"], seeded["reply"]
    assert store.get_thumb(reply, "li") == 0
    store.set_thumb(reply, "li", 1)
    store.set_thumb(reply, "li", -1)
    assert store.get_thumb(reply, "li") == -1
    store.set_thumb(reply, "li", 0)
    assert store.get_thumb(reply, "li") == 0
    assert counts(store)["thumbs"] == 1
    for bad in (True, 2, 1.0, "1", None):
        with pytest.raises(ValidationError, match="点赞值"):
            store.set_thumb(reply, "li", bad)  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):
        store.set_thumb(reply, "guest", 1)
    with pytest.raises(ValidationError, match="只能评价模型回复"):
        store.set_thumb(seeded["user_msg"], "li", 1)


def test_comparisons(seeded: dict[str, Any]) -> None:
    store, conv, u1, r1 = seeded["store"], seeded["conv"], seeded["user_msg"], seeded["reply"]
    r2 = store.add_assistant_message(conv, u1, "另一个回复", make_active=False)
    u2 = store.add_user_message(conv, "第二句")
    r3 = store.add_assistant_message(conv, u2, "第二句的回复")
    before = counts(store)
    bad = [
        (ValidationError, "同一条用户消息", dict(message_a=r1, message_b=r3, choice="a", shown_left=r1)),
        (ValidationError, "必须不同", dict(message_a=r1, message_b=r1, choice="a", shown_left=r1)),
        (ValidationError, "左侧显示的回复", dict(message_a=r1, message_b=r2, choice="a", shown_left=r3)),
        (ValidationError, "比较结果必须是 a、b、tie、both_bad 之一，收到 'A'",
         dict(message_a=r1, message_b=r2, choice="A", shown_left=r1)),
        (ValidationError, "只能评价模型回复", dict(message_a=r1, message_b=u1, choice="a", shown_left=r1)),
        (NotFoundError, "消息不存在", dict(message_a=r1, message_b=999, choice="a", shown_left=r1)),
    ]
    for error, message, kwargs in bad:
        with pytest.raises(error, match=message):
            store.add_comparison(rater="li", **kwargs)
    with pytest.raises(PermissionDeniedError):
        store.add_comparison(r1, r2, "a", "guest", shown_left=r2)
    assert counts(store) == before

    tie = store.add_comparison(r1, r2, "tie", "li", shown_left=r2)
    assert store.get_message(r1)["is_active"]  # a tie keeps the current reply
    chosen = store.add_comparison(r1, r2, "b", "wang", shown_left=r1)
    assert store.get_message(r2)["is_active"] and not store.get_message(r1)["is_active"]
    assert [m["id"] for m in store.get_history(conv)] == [u1, r2]  # the chosen one continues
    rows = store.list_comparisons(conv)
    assert [(r["id"], r["choice"], r["shown_left"], r["parent_id"]) for r in rows] == [
        (tie, "tie", r2, u1), (chosen, "b", r1, u1)]


# -- deletion -------------------------------------------------------------------------------------
def _fill_conversation(store: Store, owner: str, turns: int = 2) -> int:
    conv = store.create_conversation(owner, "intake")
    for i in range(turns):
        u = store.add_user_message(conv, f"第{i}句")
        a = store.add_assistant_message(conv, u, "回复一")
        b = store.add_assistant_message(conv, u, "回复二", make_active=False)
        store.add_rating(a, "li", overall=4)
        store.add_rating(a, "li", overall=5)
        store.set_thumb(b, "wang", -1)
        store.add_comparison(a, b, "a", "wang", shown_left=b)
        store.add_flag(conv, "self_harm", ["想伤害自己"], message_id=u)
    assessment = store.start_assessment(conv, "phq9")
    store.record_item(assessment, 1, "做事提不起劲？", "好几天", 1, "rules")
    store.add_notice(conv, "提示")
    return conv


def test_delete_conversation_cascades_everything(seeded: dict[str, Any]) -> None:
    store = seeded["store"]
    keep = counts(store)
    doomed = _fill_conversation(store, "li")
    assert counts(store)["ratings"] > keep["ratings"]
    with pytest.raises(PermissionDeniedError, match="只有管理员或对话的创建者"):
        store.delete_conversation(doomed, "wang")
    result = store.delete_conversation(doomed, "boss")
    assert result == {"conversation_id": doomed, "messages_deleted": 7}
    after = counts(store)
    assert {t: after[t] for t in TABLES if t != "deletion_log"} == {
        t: keep[t] for t in TABLES if t != "deletion_log"}
    assert query(store, "SELECT conversation_id, deleted_by FROM deletion_log") == [(doomed, "boss")]
    assert query(store, "PRAGMA foreign_key_check") == []
    snapshot = store.export_snapshot(include_demo=True, include_disabled=True)
    assert doomed not in {m["conversation_id"] for m in snapshot["messages"]}
    with pytest.raises(NotFoundError):
        store.delete_conversation(doomed, "boss")


def test_owner_can_delete_a_long_conversation(seeded: dict[str, Any]) -> None:
    # A chain of 1,200 parent links: deletion must not hit SQLite's trigger-depth limit (1,000),
    # which a self-referencing ON DELETE CASCADE would. Rows are bulk-inserted to keep the test fast.
    store = seeded["store"]
    conv = store.create_conversation("wang", "intake")
    u = store.add_user_message(conv, "第0句")
    conn = sqlite3.connect(store.path)
    with conn:
        parent = u
        for i in range(1199):
            role = "assistant" if i % 2 == 0 else "user"
            parent = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, stage_id, parent_id, created_at)"
                " VALUES (?, ?, 'x', 'intake', ?, 'now')", (conv, role, parent)).lastrowid
    conn.close()
    assert len(store.get_history(conv)) == 1200
    store.add_rating(parent, "li", overall=3)
    assert store.delete_conversation(conv, "wang")["messages_deleted"] == 1200
    assert query(store, "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conv,)) == [(0,)]


# -- safety flags ---------------------------------------------------------------------------------
def test_flags_review_queue(seeded: dict[str, Any]) -> None:
    store, conv, u1 = seeded["store"], seeded["conv"], seeded["user_msg"]
    f1 = store.add_flag(conv, "suicide", [{"pattern": "不想活", "text": "不想活了"}], message_id=u1)
    f2 = store.add_flag(conv, "unsafe_reply", source="output_screen")
    assert store.count_open_flags() == 2
    rows = store.list_flags()
    assert [r["id"] for r in rows] == [f2, f1]
    assert rows[1]["user_name"] == "li" and rows[1]["message_content"].startswith("最近")
    assert rows[1]["evidence"] == [{"pattern": "不想活", "text": "不想活了"}]
    assert store.list_conversations()[0]["open_flags"] == 2
    with pytest.raises(PermissionDeniedError, match="咨询师账户不能复核"):
        store.mark_flag_reviewed(f1, "li")
    store.mark_flag_reviewed(f1, "boss", note="已电话联系")
    with pytest.raises(ValidationError, match="已由 boss 复核"):
        store.mark_flag_reviewed(f1, "boss")
    assert [r["id"] for r in store.list_flags()] == [f2]
    reviewed = [r for r in store.list_flags(include_reviewed=True) if r["id"] == f1][0]
    assert reviewed["reviewed_by"] == "boss" and reviewed["note"] == "已电话联系"
    with pytest.raises(ValidationError, match="来源"):
        store.add_flag(conv, "x", source="magic")
    with pytest.raises(ValidationError, match="证据"):
        store.add_flag(conv, "x", evidence="text")  # type: ignore[arg-type]
    other = store.create_conversation("wang", "intake")
    with pytest.raises(ValidationError, match="不属于对话"):
        store.add_flag(other, "x", message_id=u1)
    with pytest.raises(NotFoundError):
        store.mark_flag_reviewed(999, "boss")


# -- assessments ----------------------------------------------------------------------------------
def test_assessment_lifecycle(seeded: dict[str, Any]) -> None:
    store, conv, u1 = seeded["store"], seeded["conv"], seeded["user_msg"]
    a = store.start_assessment(conv, "phq9")
    store.record_item(a, 1, "做事时提不起劲或没有兴趣", "有时候吧", None, "rules", needs_review=True)
    store.record_item(a, 1, "做事时提不起劲或没有兴趣", "一半以上的天数", 2, "model", message_id=u1)
    store.record_item(a, 9, "有不如死掉或伤害自己的念头", "完全不会", 0, "rules")
    store.correct_item(a, 1, 3, "li")
    store.finish_assessment(a, 3, "轻微")
    result = store.get_assessment(a)
    assert result["status"] == "finished" and result["total"] == 3 and result["band"] == "轻微"
    item = result["items"][0]
    assert (item["answer"], item["score"], item["method"], item["needs_review"]) == ("一半以上的天数", 2, "model", False)
    assert (item["clinician_score"], item["corrected_by"]) == (3, "li")
    assert [i["item_no"] for i in result["items"]] == [1, 9]
    assert [x["id"] for x in store.list_assessments(conv)] == [a]
    with pytest.raises(ValidationError, match="已结束"):
        store.record_item(a, 2, "q", "a", 1, "rules")
    store.correct_item(a, 9, 1, "boss")  # corrections stay possible after the end
    with pytest.raises(ValidationError, match="条目得分必须是 0-3 的整数"):
        store.record_item(store.start_assessment(conv, "gad7"), 1, "q", "a", 4, "rules")
    with pytest.raises(ValidationError, match="更正得分"):
        store.correct_item(a, 1, None, "li")  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):
        store.correct_item(a, 1, 2, "guest")
    with pytest.raises(NotFoundError, match="没有第 5 条"):
        store.correct_item(a, 5, 2, "li")
    with pytest.raises(ValidationError, match="量表"):
        store.start_assessment(conv, "PHQ 9!")
    with pytest.raises(NotFoundError, match="评估不存在"):
        store.get_assessment(999)


# -- exports --------------------------------------------------------------------------------------
def _export_fixture(store: Store) -> dict[str, int]:
    store.add_user("li", "password-li", "clinician")
    store.add_user("gone", "password-gone", "clinician")
    store.add_user("guest", "password-guest", "demo")
    v1 = store.register_model_version("base", label="v1")
    v2 = store.register_model_version("base", adapter="dpo-1", label="v2", parent_id=v1)
    conv = store.create_conversation("li", "intake", v1)
    u = store.add_user_message(conv, "你好")
    a = store.add_assistant_message(conv, u, "v1 的回复")
    b = store.add_assistant_message(conv, u, "v2 的回复", model_version_id=v2, make_active=False)
    store.add_rating(a, "li", overall=2, tags=["说教"])
    store.add_rating(a, "li", overall=3, tags=["说教", "过长"])
    store.add_rating(b, "li", overall=5)
    store.add_rating(a, "gone", overall=1)
    store.set_thumb(a, "li", -1)
    store.set_thumb(b, "li", 1)
    store.set_thumb(b, "gone", 0)
    store.add_comparison(a, b, "b", "li", shown_left=b)
    store.add_comparison(a, b, "a", "gone", shown_left=a)
    demo = store.create_conversation("guest", "intake", v1)
    du = store.add_user_message(demo, "演示")
    da = store.add_assistant_message(demo, du, "演示回复")
    store.add_rating(da, "li", overall=4)
    assessment = store.start_assessment(conv, "phq9")
    store.record_item(assessment, 1, "q", "几乎每天", 3, "rules")
    store.correct_item(assessment, 1, 2, "li")
    store.disable_user("gone")
    return {"v1": v1, "v2": v2, "conv": conv, "demo": demo, "a": a, "b": b, "da": da}


def test_exports_filter_demo_and_disabled(store: Store) -> None:
    ids = _export_fixture(store)
    snap = store.export_snapshot()
    assert set(snap) == {"model_versions", "conversations", "messages", "ratings", "thumbs",
                         "comparisons", "assessment_items", "summaries", "stage_events"}
    assert [c["id"] for c in snap["conversations"]] == [ids["conv"]]
    assert {m["conversation_id"] for m in snap["messages"]} == {ids["conv"]}
    ratings = snap["ratings"]
    assert [(r["message_id"], r["rater"], r["revision"], r["overall"]) for r in ratings] == [
        (ids["a"], "li", 2, 3), (ids["b"], "li", 1, 5)]
    assert ratings[0]["tags"] == ["说教", "过长"] and ratings[0]["parent_id"] is not None
    assert ratings[1]["model_version_id"] == ids["v2"] and ratings[0]["rater_disabled"] is False
    assert [(t["message_id"], t["value"]) for t in snap["thumbs"]] == [(ids["a"], -1), (ids["b"], 1)]
    assert [(c["choice"], c["model_version_a"], c["model_version_b"]) for c in snap["comparisons"]] == [
        ("b", ids["v1"], ids["v2"])]
    assert [(i["score"], i["clinician_score"], i["instrument"]) for i in snap["assessment_items"]] == [(3, 2, "phq9")]

    everything = store.export_snapshot(include_demo=True, include_disabled=True)
    assert {c["id"] for c in everything["conversations"]} == {ids["conv"], ids["demo"]}
    assert {(r["rater"], r["rater_disabled"], r["is_demo"]) for r in everything["ratings"]} == {
        ("li", False, False), ("gone", True, False), ("li", False, True)}
    assert len(everything["comparisons"]) == 2
    assert len(store.export_ratings(all_revisions=True)) == 3
    assert store.export_ratings() == snap["ratings"]
    assert store.export_messages() == snap["messages"]
    assert store.export_conversations(include_demo=True)[1]["owner_role"] == "demo"
    assert store.export_thumbs() == snap["thumbs"]
    assert store.export_comparisons() == snap["comparisons"]
    assert store.export_assessment_items() == snap["assessment_items"]


def test_export_query_count_does_not_grow_with_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    real_connect = schema.connect

    def traced(path: str) -> sqlite3.Connection:
        conn = real_connect(path)
        conn.set_trace_callback(statements.append)
        return conn

    store = Store(tmp_path / "f.db")
    ids = _export_fixture(store)
    monkeypatch.setattr(schema, "connect", traced)
    store.export_snapshot()
    small = len(statements)
    monkeypatch.setattr(schema, "connect", real_connect)
    for i in range(30):
        u = store.add_user_message(ids["conv"], f"更多 {i}")
        r = store.add_assistant_message(ids["conv"], u, "回复")
        store.add_rating(r, "li", overall=4, tags=["过长"])
        store.set_thumb(r, "li", 1)
    statements.clear()
    monkeypatch.setattr(schema, "connect", traced)
    snap = store.export_snapshot()
    assert len(snap["ratings"]) == 32
    assert len(statements) == small <= 12


# -- dashboard ------------------------------------------------------------------------------------
def test_dashboard_figures(store: Store) -> None:
    ids = _export_fixture(store)
    day = store.ratings_per_day()
    assert sum(d["ratings"] for d in day) == 4  # every submission (revisions too), demo left out
    assert sum(d["ratings"] for d in store.ratings_per_day(utc_offset_hours=0, include_demo=True)) == 5
    with pytest.raises(ValidationError, match="时区偏移"):
        store.ratings_per_day(utc_offset_hours=99)
    means = {(m["label"], m["dimension"]): (m["mean"], m["n"]) for m in store.mean_scores_by_version()}
    assert means == {("v1", "overall"): (2.0, 2), ("v2", "overall"): (5.0, 1)}
    [pair] = store.win_rates()
    assert (pair["version_a"], pair["version_b"], pair["wins_a"], pair["wins_b"], pair["n"]) == (
        ids["v1"], ids["v2"], 1, 1, 2)
    assert pair["win_rate_a"] == 0.5 and pair["pair"] == "v1 vs v2"
    assert store.tag_frequencies() == [{"tag": "说教", "count": 1}, {"tag": "过长", "count": 1}]
    activity = {a["user"]: a for a in store.clinician_activity()}
    assert (activity["li"]["conversations"], activity["li"]["rated_messages"], activity["li"]["thumbs"]) == (1, 3, 2)
    assert activity["li"]["unrated_replies"] == 0 and activity["guest"]["unrated_replies"] == 1
    assert activity["gone"]["disabled"] is True
    summary = store.summary_counts()
    assert summary["replies"] == 3 and summary["comparisons"] == 2 and summary["ratings"] == 4


# -- privacy scrubbing ----------------------------------------------------------------------------
def test_scrub_is_applied_at_storage_time(tmp_path: Path) -> None:
    def scrub(text: str) -> str:
        return text.replace("13812345678", "〔电话〕").replace("张三", "〔姓名〕")

    store = Store(tmp_path / "f.db", scrub=scrub)
    store.add_user("li", "password-li", "clinician")
    conv = store.create_conversation("li", "intake")
    u = store.add_user_message(conv, "我叫张三，电话13812345678")
    r = store.add_assistant_message(conv, u, "张三你好")
    store.add_rating(r, "li", overall=3, comment="张三的回复", rewrite="张三，我在听")
    store.add_flag(conv, "x", [{"text": "张三"}])
    a = store.start_assessment(conv, "phq9")
    store.record_item(a, 1, "q", "张三说几乎每天", 3, "rules")
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    assert "张三" not in dump and "13812345678" not in dump
    assert store.get_message(u)["content"] == "我叫〔姓名〕，电话〔电话〕"
    assert store.get_conversation(conv)["title"] == "我叫〔姓名〕，电话〔电话〕"

    broken = Store(tmp_path / "f.db", scrub=lambda text: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(StoreError, match="脱敏"):
        broken.add_user_message(conv, "hi")
    with pytest.raises(ValidationError):
        Store(tmp_path / "f.db", scrub="not callable")  # type: ignore[arg-type]


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.db")
    raters = [f"rater{i}" for i in range(8)]
    for name in raters:
        store.add_user(name, "password-1", "clinician")
    conv = store.create_conversation("rater0", "intake")
    u = store.add_user_message(conv, "你好")
    replies = [store.add_assistant_message(conv, u, f"回复 {i}", make_active=False) for i in range(20)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(raters))

    def work(rater: str) -> None:
        try:
            barrier.wait()
            # A second Store object on the same file, as a handler building its own would.
            local = Store(store.path) if rater.endswith(("1", "3")) else store
            for i in range(200):
                local.add_rating(replies[i % 20], rater, overall=1 + i % 5, tags=[f"t{i % 3}"])
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert query(store, "SELECT COUNT(*) FROM ratings") == [(1600,)]
    assert query(store, "SELECT COUNT(*) FROM ratings WHERE is_latest = 1") == [(160,)]
    assert query(store, "SELECT MAX(revision) FROM ratings") == [(10,)]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "PRAGMA foreign_key_check") == []


def test_concurrent_writer_in_another_process(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.db")
    store.add_user("a", "password-1", "clinician")
    store.add_user("b", "password-1", "clinician")
    conv = store.create_conversation("a", "intake")
    reply = store.add_assistant_message(conv, store.add_user_message(conv, "你好"), "回复")
    script = (
        "import sys; from mvp.store import Store; s = Store(sys.argv[1]);"
        "[s.add_rating(int(sys.argv[2]), 'b', overall=3) for _ in range(150)]"
    )
    child = subprocess.Popen([sys.executable, "-c", script, store.path, str(reply)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    for _ in range(150):
        store.add_rating(reply, "a", overall=4)
    assert child.wait(timeout=60) == 0
    rows = dict(query(store, "SELECT rater, COUNT(*) FROM ratings GROUP BY rater"))
    assert rows == {"a": 150, "b": 150}
    assert query(store, "PRAGMA integrity_check") == [("ok",)]


def test_json_fields_are_stored_as_readable_json(seeded: dict[str, Any]) -> None:
    store = seeded["store"]
    [(raw,)] = query(store, "SELECT tags FROM ratings WHERE id = ?",
                     (store.add_rating(seeded["reply"], "li", tags=["过长"])["id"],))
    assert json.loads(raw) == ["过长"] and "过长" in raw  # not \\u escapes: readable in Datasette


def test_closed_store_reopens_and_export_rows_are_independent(seeded: dict[str, Any]) -> None:
    store = seeded["store"]
    store.close()
    store.add_rating(seeded["reply"], "li", tags=["过长"])  # a closed Store reopens its connection
    store.add_rating(seeded["reply"], "wang", tags=["过长"])
    first, second = store.export_ratings()
    first["tags"].append("改过")  # decoded JSON is shared through a memo: rows must not alias
    assert second["tags"] == ["过长"]
    with Store(store.path) as other:
        assert other.count_users() == 4


def test_last_enabled_admin_cannot_be_disabled(tmp_path):
    from mvp.store import Store, ValidationError

    store = Store(tmp_path / "f.db")
    store.add_user("boss", "long-password-1", "admin")
    store.add_user("wang", "long-password-1", "clinician")
    with pytest.raises(ValidationError, match="最后一个"):
        store.disable_user("boss")
    assert store.authenticate("boss", "long-password-1")
    store.add_user("boss2", "long-password-1", "admin")
    store.disable_user("boss")
    assert not store.authenticate("boss", "long-password-1")
    with pytest.raises(ValidationError):
        store.disable_user("boss2")
    store.disable_user("wang")


@pytest.mark.parametrize(
    ("text", "error"),
    [("好\x85的", "控制字符"), ("a\x9bb", "控制字符"), ("文件\u202egpj.exe", "文字方向控制字符"),
     ("x\u2066y", "文字方向控制字符"), ("\u200b\u200d ", "消息不能为空")],
)
def test_the_message_validator_refuses_invisible_controls(seeded: dict[str, Any], text: str, error: str) -> None:
    store = seeded["store"]
    before = counts(store)["messages"]
    with pytest.raises(ValidationError, match=error):
        store.add_user_message(seeded["conv"], text)
    assert counts(store)["messages"] == before


def test_the_message_validator_strips_zero_width_characters(seeded: dict[str, Any]) -> None:
    store = seeded["store"]
    mid = store.add_user_message(seeded["conv"], "我\u200b很\ufeff好\u200d")
    assert store.get_message(mid)["content"] == "我很好"
