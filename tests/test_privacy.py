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


def test_mistyped_numbers_still_scrubbed() -> None:
    # a wrong check digit is a typo, not a different kind of number; a card number introduced as one
    assert scrub(f"身份证{VALID_ID[:-1]}1").text == "身份证〔身份证〕"
    assert scrub("卡号6217001234567894").text == "卡号〔银行卡〕"


@pytest.mark.parametrize("text", [
    "订单6217001234567894",                   # fails Luhn, not introduced as a card
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
                             "student_id": 0, "plate": 0, "address": 1, "org": 0, "name": 2}
    for kind, placeholder in PLACEHOLDERS.items():
        assert (placeholder in result.text) == bool(result.counts[kind]), kind
    assert not any(ch.isdigit() for ch in result.text)


def test_names_learned_once_replaced_everywhere() -> None:
    scrubber = Scrubber(keep_numbers=[])
    scrubber.learn("我老公张伟最近总不回家")
    assert scrubber.scrub("张伟昨天又喝醉了").text == "〔姓名〕昨天又喝醉了"
    assert scrubber.scrub("伟伟也在").text == "〔姓名〕也在"               # a partial form of the name
    assert Scrubber(keep_numbers=[]).scrub("旺财昨天又喝醉了").text == "旺财昨天又喝醉了"


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


# -- personal data as people write it (issue 13) ---------------------------------------------------
@pytest.mark.parametrize("text, secret, kind", [
    ("刘海涛昨天又冲我发火了", "刘海涛", "name"),
    ("我老婆（陈美玲）一直觉得是我的问题", "陈美玲", "name"),
    ("我们主管钱磊每次开会都点我名", "钱磊", "name"),
    ("博导吴志刚让我周末也待在实验室", "吴志刚", "name"),
    ("她叫董雪，是我同事", "董雪", "name"),
    ("王老师说我考不上高中", "王老师", "name"),
    ("李医生给我开了药", "李医生", "name"),
    ("芳芳是我最好的朋友", "芳芳", "name"),
    ("我同桌叫Jack，总笑我", "Jack", "name"),
    ("我在南京外国语学校读书", "南京外国语学校", "org"),
    ("我是浙江大学的研究生", "浙江大学", "org"),
    ("我在阿里巴巴杭州西溪园区上班", "阿里巴巴杭州西溪园区", "org"),
    ("我在字节跳动做运营", "字节跳动", "org"),
    ("我在上海市精神卫生中心住过院", "上海市精神卫生中心", "org"),
    ("我住在国贸三期 A 座 2501", "国贸三期 A 座 2501", "address"),
    ("加我微信吧：lucky_girl_1998", "lucky_girl_1998", "wechat"),
    ("微信搜 sunshine2021 就能找到我", "sunshine2021", "wechat"),
    ("加V：abc19951101", "abc19951101", "wechat"),
    ("我电话138.0013.8000", "138.0013.8000", "phone"),
    ("我的号码一三八零零一三八零零零", "一三八零零一三八零零零", "phone"),
    ("我的学号是2021110234", "2021110234", "student_id"),
    ("他开着沪B67890跟着我", "沪B67890", "plate"),
    (f"身份证{VALID_ID[:-1]}1", VALID_ID[:-1] + "1", "id_card"),
    ("我给杨帆发了很多消息", "杨帆", "name"),
    ("我孩子在育才学校读书，老师姓马", "育才学校", "org"),
    ("我们住在金茂府T2-1801", "金茂府T2-1801", "address"),
    ("我住在回龙观龙泽苑东区9号楼", "回龙观龙泽苑东区9号楼", "address"),
    ("我在北京市朝阳区妇幼保健院生的孩子", "北京市朝阳区妇幼保健院", "org"),
])
def test_issue_examples_are_scrubbed(text: str, secret: str, kind: str) -> None:
    result = scrub(text, keep_numbers=[])
    assert secret not in result.text and PLACEHOLDERS[kind] in result.text, result.text
    start = text.index(secret)
    assert {"kind": kind, "start": start, "end": start + len(secret)} in result.found


@pytest.mark.parametrize("text", [
    "我去医院看了，医生说是焦虑", "我们学校的压力太大了", "我在一家小公司上班", "老师让我们写学号，我写错了被骂了",
    "我老公最近总是很晚回家", "谢谢你听我说这么多", "我每天刷抖音刷到半夜", "我把他的微信删了", "我一个人在北京打拼",
    "我妈住院了，我每天医院公司两头跑", "我九月份要去新学校报到了", "对方总是不回我消息", "我考上大学以后就不行了",
    "我天天都很累", "希望24热线400-161-9995是全天的吗", "我吃了一整板舍曲林", "一个人住太冷清了",
    "比如公司事情多或者家庭有问题", "我觉得王者荣耀让我上瘾了", "我们学校分东区和西区", "我们家狗叫旺财", "我昨天打了北京心理危机研究与干预中心的电话010-82951332",
])
def test_clean_text_unchanged(text: str) -> None:
    result = scrub(text)
    assert result.text == text and result.found == ()


def test_titles_and_surnames_in_one_message() -> None:
    assert scrub("我孩子在育才学校读书，老师姓马").text == "我孩子在〔机构〕读书，老师姓〔姓名〕"


def test_partial_names_propagate_within_a_conversation_only() -> None:
    messages = [{"role": "user", "content": "我老婆陈美玲最近总说不想活了"},
                {"role": "assistant", "content": "美玲最近发生了什么？"},
                {"role": "user", "content": "玲玲以前很开朗"}]
    out, counts = scrub_messages(messages)
    assert [m["content"] for m in out] == ["我老婆〔姓名〕最近总说不想活了", "〔姓名〕最近发生了什么？", "〔姓名〕以前很开朗"]
    assert counts["name"] == 3
    assert scrub("美玲最近发生了什么？").text == "美玲最近发生了什么？"      # another conversation: not known


def test_name_introduced_late_is_replaced_earlier_too() -> None:
    out, _ = scrub_messages([{"role": "user", "content": "晓丹今天又当众让我难堪了"},
                             {"role": "user", "content": "我们组长叫朱晓丹"}])
    assert out[0]["content"] == "〔姓名〕今天又当众让我难堪了"


def test_record_alignment_with_new_kinds() -> None:
    row = {"prompt": [{"role": "user", "content": "我叫周宁，在腾讯上班，车牌粤B12345"}],
           "chosen": [{"role": "assistant", "content": "周宁，在腾讯的压力一定很大"}],
           "rejected": [{"role": "assistant", "content": "宁宁你辞职吧"}]}
    out, counts = scrub_record(row)
    assert out["prompt"][0]["content"] == "我叫〔姓名〕，在〔机构〕上班，车牌〔车牌〕"
    assert out["chosen"][0]["content"] == "〔姓名〕，在〔机构〕的压力一定很大"
    assert out["rejected"][0]["content"] == "〔姓名〕你辞职吧"
    assert counts["org"] == 2 and counts["plate"] == 1 and counts["name"] == 3


def test_found_offsets_point_into_the_input() -> None:
    text = "我叫王芳，手机13912345678，在北京协和医院上班"
    result = scrub(text)
    assert [(f["kind"], text[f["start"]:f["end"]]) for f in result.found] == [
        ("name", "王芳"), ("phone", "13912345678"), ("org", "北京协和医院")]


def test_already_scrubbed_text_is_stable() -> None:
    once = scrub("我叫王芳，在字节跳动上班，电话13912345678").text
    assert scrub(once).text == once


def test_storage_scrubber_with_the_store(tmp_path: Path) -> None:
    from mvp.safety.privacy import storage_scrubber
    from mvp.store import Store
    fn = storage_scrubber()
    assert fn("我老婆（陈美玲）在字节跳动上班") == "我老婆（〔姓名〕）在〔机构〕上班"
    assert fn("请拨打12356") == "请拨打12356"
    store = Store(tmp_path / "feedback.db", scrub=fn)
    store.close()


# -- command line ------------------------------------------------------------------------------------
def test_cli_reads_lines_and_jsonl() -> None:
    import io
    from mvp.safety.privacy import main
    stdin = io.StringIO('我叫王芳\n{"text": "电话13912345678", "id": 3}\n\n芳芳呢\n')
    stdout = io.StringIO()
    assert main(["scrub"], stdin=stdin, stdout=stdout) == 0
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert rows[0] == {"text": "我叫〔姓名〕", "found": [{"kind": "name", "start": 2, "end": 4}]}
    assert rows[1] == {"text": "电话〔电话〕", "found": [{"kind": "phone", "start": 2, "end": 13}]}
    assert rows[2]["text"] == "〔姓名〕呢"                              # a nickname, found without context
    stdout = io.StringIO()
    assert main(["scrub", "--conversation"], stdin=io.StringIO("我老公叫高志远\n志远又没回家\n"), stdout=stdout) == 0
    assert [json.loads(x)["text"] for x in stdout.getvalue().splitlines()] == ["我老公叫〔姓名〕", "〔姓名〕又没回家"]


def test_cli_bad_jsonl_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    import io
    from mvp.safety.privacy import main
    assert main(["scrub"], stdin=io.StringIO('{"content": "x"}\n'), stdout=io.StringIO()) == 2
    assert '"text"' in capsys.readouterr().err


def test_cli_as_a_module() -> None:
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "mvp.safety.privacy", "scrub"], input="我在字节跳动上班\n",
                          capture_output=True, text=True, cwd=root, timeout=60, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"text": "我在〔机构〕上班", "found": [{"kind": "org", "start": 2, "end": 6}]}


# -- the labelled set and the wing rules -------------------------------------------------------------
def test_labelled_set_is_large_split_once_and_disjoint() -> None:
    from bench.bench_privacy import gold_spans, load
    dev, held = load("dev"), load("heldout")
    assert len(dev) + len(held) >= 400
    assert not {r["text"] for r in dev} & {r["text"] for r in held}
    assert not {r.get("conversation") for r in dev if r.get("conversation")} & \
        {r.get("conversation") for r in held if r.get("conversation")}
    for rec in dev + held:
        assert all(item["kind"] in KINDS and item["text"] in rec["text"] for item in rec["pii"])
        assert len(gold_spans(rec)) >= len({i["text"] for i in rec["pii"]}) - 1
    assert sum(1 for r in held if not r["pii"]) >= 60


def test_dev_targets() -> None:
    from bench.bench_privacy import evaluate, load
    result = evaluate(load("dev"))
    assert result["recall"] >= 0.95 and result["clean_changed"] <= 0.05


def test_privacy_modules_stay_in_their_wing() -> None:
    root = Path(__file__).resolve().parent.parent / "mvp" / "safety"
    for path in root.glob("privacy*.py"):
        source = path.read_text(encoding="utf-8")
        assert source.startswith('"""'), path.name
        assert "import train" not in source and "from train" not in source and "mvp.app" not in source, path.name
        assert len(source.splitlines()) <= 400, path.name
