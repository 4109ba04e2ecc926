"""Safety flags are never lost: written with their message, one per message, kept from owners' deletes."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mvp.store import PermissionDeniedError, Store, StoreError, ValidationError, passwords


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**10)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "feedback.db")
    s.add_user("li", "password-li", "clinician")
    s.add_user("boss", "password-boss", "admin")
    s.add_user("guest", "password-guest", "demo")
    yield s
    s.close()


def _conversation(store: Store, owner: str = "li") -> int:
    mv = store.register_model_version("models/demo")
    return store.create_conversation(owner, "intake", mv)


def test_message_and_flag_are_one_row_each_with_all_categories(store):
    conv = _conversation(store)
    mid = store.add_user_message(conv, "我不想活了，也想打他", flag={
        "categories": ["suicide", "harm_others"], "evidence": ["不想活", "打他"], "source": "rules"})
    flags = store.list_flags(conversation_id=conv)
    assert len(flags) == 1
    assert flags[0]["message_id"] == mid and flags[0]["categories"] == ["suicide", "harm_others"]
    assert flags[0]["category"] == "suicide" and flags[0]["evidence"] == ["不想活", "打他"]


def test_a_second_flag_of_the_same_message_and_source_extends_the_first(store):
    conv = _conversation(store)
    mid = store.add_user_message(conv, "我想吃药结束一切", flag={"categories": ["suicide"], "evidence": ["结束一切"]})
    again = store.add_flag(conv, ["medical", "suicide"], ["吃药"], source="rules", message_id=mid)
    flags = store.list_flags(conversation_id=conv)
    assert len(flags) == 1 and flags[0]["id"] == again
    assert flags[0]["categories"] == ["suicide", "medical"] and flags[0]["evidence"] == ["结束一切", "吃药"]
    store.add_flag(conv, "suicide", ["model"], source="model", message_id=mid)  # another layer: its own flag
    assert len(store.list_flags(conversation_id=conv)) == 2


def test_a_refused_flag_leaves_no_message_behind(store):
    conv = _conversation(store)
    with pytest.raises(ValidationError):
        store.add_user_message(conv, "我想死", flag={"categories": ["suicide"], "source": "nonsense"})
    with pytest.raises(ValidationError):
        store.add_user_message(conv, "我想死", flag={"categories": []})
    assert store.get_history(conv) == []


def test_a_crash_between_message_and_flag_cannot_happen(store, monkeypatch):
    conv = _conversation(store)
    real = store._insert_flag

    def boom(*args, **kwargs):
        real(*args, **kwargs)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_insert_flag", boom)
    with pytest.raises(StoreError):
        store.add_user_message(conv, "我想死", flag={"categories": ["suicide"], "evidence": ["想死"]})
    assert store.get_history(conv) == [] and store.list_flags(conversation_id=conv) == []


@pytest.mark.parametrize("owner", ["li", "guest"])
def test_owner_cannot_delete_a_conversation_with_an_open_flag(store, owner):
    conv = _conversation(store, owner)
    store.add_user_message(conv, "我想死", flag={"categories": ["suicide"], "evidence": ["想死"]})
    with pytest.raises(PermissionDeniedError, match="安全标记"):
        store.delete_conversation(conv, by_user=owner)
    assert len(store.list_flags()) == 1
    flag = store.list_flags()[0]
    store.mark_flag_reviewed(flag["id"], "boss", "已电话联系")
    assert store.delete_conversation(conv, by_user=owner)["messages_deleted"] == 1


def test_admin_deletion_records_the_flag_categories_and_evidence(store):
    conv = _conversation(store)
    store.add_user_message(conv, "我想死", flag={"categories": ["suicide"], "evidence": ["想死"]})
    store.delete_conversation(conv, by_user="boss")
    db = store.database()
    try:
        row = next(db.query("SELECT * FROM deletion_log WHERE conversation_id = ?", [conv]))
    finally:
        db.close()
    assert row["deleted_by"] == "boss"
    assert json.loads(row["flags"]) == [{"categories": ["suicide"], "evidence": ["想死"], "source": "rules",
                                        "reviewed": False}]


def test_retention_purges_old_conversations_but_never_an_open_flag(store, monkeypatch):
    old, flagged, fresh = (_conversation(store) for _ in range(3))
    store.add_user_message(old, "很久以前的对话")
    store.add_user_message(flagged, "我想死", flag={"categories": ["suicide"], "evidence": ["想死"]})
    store.add_user_message(fresh, "今天的对话")
    db = store.database()
    try:
        db.execute("UPDATE conversations SET updated_at = '2020-01-01T00:00:00.000+00:00' WHERE id IN (?, ?)",
                   [old, flagged])
        db.conn.commit()
    finally:
        db.close()
    plan = store.purge_conversations(30)
    assert plan["dry_run"] and plan["conversations"] == [old] and plan["kept_flagged"] == [flagged]
    assert store.get_conversation(old)  # a dry run deletes nothing
    done = store.purge_conversations(30, dry_run=False)
    assert done["conversations"] == [old] and done["messages"] == 1
    ids = {c["id"] for c in store.list_conversations()}
    assert ids == {flagged, fresh}
    assert store.list_audit()[0]["action"] == "retention_purge"
    with pytest.raises(ValidationError):
        store.purge_conversations(0)
