"""Tests for mvp.safety.privacy: typed placeholders, validation of numbers, kept hotlines, aligned pairs.

Run: .venv/bin/python -m pytest tests/test_privacy.py -q   (offline, under a second)
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mvp.safety.privacy import (KINDS, PLACEHOLDERS, Scrubber, add_counts, empty_counts, id_checksum_ok, luhn_ok, scrub,
                         scrub_messages, scrub_record)
from mvp.safety import load_resources

CASES = Path(__file__).resolve().parent / "data" / "pii_cases.jsonl"
VALID_ID = "11010519491231002X"
VALID_ID_X = "11010119900307010X"
VALID_CARD = "6217001234567893"


def _cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["text"][:16])
def test_planted_cases(case: dict) -> None:
    result = scrub(case["text"])
    assert result.text == case["expected"]
    assert {k: v for k, v in result.counts.items() if v} == case["counts"]


def test_planted_cases_cover_every_kind() -> None:
    covered = {kind for case in _cases() for kind in case["counts"]}
    assert covered == set(KINDS)
    assert sum(1 for case in _cases() if not case["counts"]) >= 8      # cases that must stay unchanged


def test_validators() -> None:
    assert id_checksum_ok(VALID_ID) and id_checksum_ok(VALID_ID_X) and id_checksum_ok(VALID_ID_X.lower())
    assert not id_checksum_ok(VALID_ID[:-1] + "1") and not id_checksum_ok("123")
    assert luhn_ok(VALID_CARD) and luhn_ok("6217 0012 3456 7893")
    assert not luhn_ok("6217001234567894") and not luhn_ok("")


@pytest.mark.parametrize("text", [
    f"身份证{VALID_ID[:-1]}1",                # wrong check digit
    "卡号6217001234567894",                   # fails Luhn
    "身份证11010519491331002X",               # month 13
    "座机82951332",                           # no area code
    "12345",
])
def test_invalid_numbers_left_alone(text: str) -> None:
    result = scrub(text)
    assert result.text == text and not any(result.counts.values())


def test_hotline_numbers_kept_from_resources() -> None:
    numbers = load_resources().phone_numbers()
    text = "，".join(numbers)
    assert scrub(text).text == text
    assert scrub("请拨打 +86 10 8295 1332 或 010 8295 1332").text == "请拨打 +86 10 8295 1332 或 010 8295 1332"


def test_custom_keep_numbers() -> None:
    assert scrub("咨询中心 0571-88888888", keep_numbers=["0571-88888888"]).text == "咨询中心 0571-88888888"
    assert scrub("咨询中心 0571-88888888", keep_numbers=[]).text == "咨询中心 〔电话〕"
    assert scrub("报警110", keep_numbers=[]).text == "报警110"          # short emergency numbers always kept


def test_counts_for_a_mixed_message() -> None:
    text = (f"我叫王芳，手机13912345678，备用010-62345678，邮箱wf@example.com，QQ：123456，微信wf_1990x，"
            f"身份证{VALID_ID}，卡号{VALID_CARD}，住在上海市浦东新区世纪大道100号。王芳谢谢你")
    result = scrub(text)
    assert result.counts == {"email": 1, "id_card": 1, "bank_card": 1, "phone": 2, "qq": 1, "wechat": 1,
                             "address": 1, "name": 2}
    for kind, placeholder in PLACEHOLDERS.items():
        assert placeholder in result.text, kind
    assert not any(ch.isdigit() for ch in result.text)


def test_names_learned_once_replaced_everywhere() -> None:
    scrubber = Scrubber(keep_numbers=[])
    scrubber.learn("我老公张伟最近总不回家")
    assert scrubber.scrub("张伟昨天又喝醉了").text == "〔姓名〕昨天又喝醉了"
    assert scrub("张伟昨天又喝醉了").text == "张伟昨天又喝醉了"          # not introduced: kept


def test_dpo_triple_keeps_placeholders_aligned() -> None:
    row = {
        "prompt": [{"role": "system", "content": "你是心理咨询师"},
                   {"role": "user", "content": "我叫李明，我老婆王芳天天跟我吵，电话13812345678"}],
        "chosen": [{"role": "assistant", "content": "李明，听起来你和王芳之间有很多矛盾。"}],
        "rejected": [{"role": "assistant", "content": "李明你直接给13812345678打电话骂回去"}],
        "label": True,
    }
    original = copy.deepcopy(row)
    out, counts = scrub_record(row)
    assert row == original                                              # input not modified
    assert out["prompt"][1]["content"] == "我叫〔姓名〕，我老婆〔姓名〕天天跟我吵，电话〔电话〕"
    assert out["chosen"][0]["content"] == "〔姓名〕，听起来你和〔姓名〕之间有很多矛盾。"
    assert out["rejected"][0]["content"] == "〔姓名〕你直接给〔电话〕打电话骂回去"
    assert out["prompt"][0] == row["prompt"][0] and out["label"] is True
    assert counts["name"] == 5 and counts["phone"] == 2


def test_scrub_record_with_string_fields() -> None:
    out, counts = scrub_record({"prompt": "我叫赵磊", "completion": "赵磊你好", "other": "赵磊"})
    assert out == {"prompt": "我叫〔姓名〕", "completion": "〔姓名〕你好", "other": "赵磊"}
    assert counts["name"] == 2


def test_scrub_messages_keeps_roles_and_extra_keys() -> None:
    messages = [{"role": "user", "content": "我妈李秀英打我", "id": 3},
                {"role": "assistant", "content": "李秀英经常这样吗？"},
                {"role": "user", "content": None}]
    out, counts = scrub_messages(messages)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0] == {"role": "user", "content": "我妈〔姓名〕打我", "id": 3}
    assert out[1]["content"] == "〔姓名〕经常这样吗？" and out[2]["content"] is None
    assert counts["name"] == 2 and messages[0]["content"] == "我妈李秀英打我"


def test_deterministic() -> None:
    text = "我叫张伟，电话138 1234 5678，住阳光花园5号楼"
    assert scrub(text) == scrub(text)
    assert Scrubber().scrub(text).text == Scrubber().scrub(text).text


@pytest.mark.parametrize("text", [
    "我老公高兴坏了", "我叫了车去医院", "我是高三学生", "我住在北京市朝阳区", "下午3点到5点开会",
    "我今年28岁，体重60公斤", "考了98分", "这件事和我妈没关系", "我的微信很少用",
])
def test_ordinary_text_unchanged(text: str) -> None:
    assert scrub(text).text == text


def test_count_helpers() -> None:
    total = empty_counts()
    assert set(total) == set(KINDS) and not any(total.values())
    add_counts(total, {"phone": 2})
    add_counts(total, {"phone": 1, "name": 1})
    assert total["phone"] == 3 and total["name"] == 1


# -- storage: secure_delete and owner-only files ---------------------------------------------------
def test_store_connections_use_secure_delete(tmp_path: Path) -> None:
    from mvp.store import Store
    store = Store(tmp_path / "feedback.db")
    try:
        with store._read() as conn:
            assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        with store._write() as conn:
            assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        db = store.database()
        assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        db.conn.close()
    finally:
        store.close()


def test_store_files_are_owner_only(tmp_path: Path) -> None:
    import os
    import stat
    from mvp.store import Store
    old = os.umask(0o022)                      # a typical default: files would be 0644
    try:
        store = Store(tmp_path / "feedback.db")
        store.add_user("alice", "pw-long-enough-1", "clinician")
    finally:
        os.umask(old)
    try:
        files = [p for p in tmp_path.iterdir() if p.name.startswith("feedback.db")]
        assert {p.name for p in files} >= {"feedback.db", "feedback.db-wal", "feedback.db-shm"}
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
    finally:
        store.close()


def test_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    import os
    import stat
    from mvp.store import Store
    path = tmp_path / "feedback.db"
    Store(path).close()
    for p in tmp_path.iterdir():
        os.chmod(p, 0o644)
    Store(path).close()
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_deleted_text_is_not_left_in_the_file(tmp_path: Path) -> None:
    import sqlite3
    from mvp.store.base import connect, create_private_file
    path = str(tmp_path / "x.db")
    create_private_file(path)
    conn = connect(path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", ("SECRET-陈美玲-13800138000" * 20,))
    conn.execute("DELETE FROM t")
    conn.close()
    assert b"SECRET" not in Path(path).read_bytes()
    plain = str(tmp_path / "y.db")                 # control: without the pragma the text stays behind
    conn = sqlite3.connect(plain, isolation_level=None)
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", ("SECRET-陈美玲-13800138000" * 20,))
    conn.execute("DELETE FROM t")
    conn.close()
    assert b"SECRET" in Path(plain).read_bytes()
