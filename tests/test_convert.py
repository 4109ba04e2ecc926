"""train.convert and train.formats: round trips, per-turn expansion, role-order checks, size stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.demo import tiny_lm
from train import convert, formats

DIALOGUES = list(tiny_lm.iter_dialogues())
COUNSELLING = [d for d in DIALOGUES if d["source"] == "cpsycound"][:40]  # client speaks first
DOCTOR_LED = [d for d in DIALOGUES if d["source"] == "mdd5k"][:10]  # doctor first, client last


def write_messages(path: Path, dialogues: list[dict]) -> Path:
    formats.write_jsonl(path, [{"messages": d["messages"]} for d in dialogues])
    return path


def read_messages(path: Path) -> list[list[dict]]:
    return [row["messages"] for row in formats.read_rows(path)]


def test_messages_sharegpt_messages_is_identical(tmp_path: Path) -> None:
    src = write_messages(tmp_path / "in.jsonl", COUNSELLING + DOCTOR_LED)
    assert convert.main(["--from", "messages", "--to", "sharegpt", str(src), str(tmp_path / "s.json")]) == 0
    sharegpt = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert all(formats.llamafactory_problem(row, "sft") is None for row in sharegpt)
    doctor = sharegpt[len(COUNSELLING)]
    assert doctor["system"].startswith(formats.LEADING_ASSISTANT_NOTE.format(content=""))
    assert convert.main(["--from", "sharegpt", "--to", "messages", str(tmp_path / "s.json"),
                         str(tmp_path / "back.jsonl")]) == 0
    expected = [formats.trim_trailing_user(d["messages"]) for d in COUNSELLING + DOCTOR_LED]
    assert read_messages(tmp_path / "back.jsonl") == expected


def test_alpaca_round_trip_and_system_prompt(tmp_path: Path) -> None:
    with_system = [formats.with_system("你是心理咨询师。", d["messages"]) for d in COUNSELLING[:5]]
    rows, summary = convert.convert_rows([{"messages": m} for m in with_system], "messages", "alpaca")
    assert summary["rows_written"] == 5 and rows[0]["system"] == "你是心理咨询师。"
    assert rows[0]["history"] and rows[0]["instruction"] == with_system[0][-2]["content"]
    back, _ = convert.convert_rows(rows, "alpaca", "messages")
    assert [r["messages"] for r in back] == with_system


def test_bianque_expansion_counts_and_merge_back(tmp_path: Path) -> None:
    src = write_messages(tmp_path / "in.jsonl", COUNSELLING)
    summary = convert.convert_file(src, tmp_path / "b.jsonl", "messages", "bianque")
    turns = sum(len(formats.assistant_indices(d["messages"])) for d in COUNSELLING)
    assert summary["expand"] == "per-turn" and summary["rows_written"] == turns
    samples = formats.read_rows(tmp_path / "b.jsonl")
    first = COUNSELLING[0]["messages"]
    assert samples[0] == {"input": f"来访者：{first[0]['content']}\n咨询师：", "target": first[1]["content"]}
    assert samples[1]["input"].endswith(f"来访者：{first[2]['content']}\n咨询师：")
    merged = convert.convert_file(tmp_path / "b.jsonl", tmp_path / "m.jsonl", "bianque", "messages",
                                  merge=True)
    assert merged["notes"]["merged_prefix_rows"] == turns - len(COUNSELLING)
    assert read_messages(tmp_path / "m.jsonl") == [formats.trim_trailing_user(d["messages"]) for d in COUNSELLING]


def test_bianque_keeps_the_stage_instruction_and_reads_bianque_labels() -> None:
    messages = [{"role": "system", "content": "你是咨询师。"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好，今天想聊什么？"}]
    row = formats.to_bianque(messages)
    assert row == {"input": "你是咨询师。\n对话：\n来访者：你好\n咨询师：", "target": "你好，今天想聊什么？"}
    assert formats.from_bianque(row) == messages
    original = {"input": "病人：我头疼。\n医生：多久了？\n病人：三天。\n医生：", "target": "有发烧吗？"}
    assert [m["role"] for m in formats.from_bianque(original)] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(formats.FormatError):
        formats.from_bianque({"input": "随便的文字", "target": "x"})


def test_per_turn_expansion_for_other_formats() -> None:
    rows, summary = convert.convert_rows([{"messages": d["messages"]} for d in DOCTOR_LED[:3]], "messages",
                                         "messages", expand="per-turn")
    turns = sum(len(formats.assistant_indices(d["messages"])) for d in DOCTOR_LED[:3])
    assert summary["rows_written"] == len(rows) == turns
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)


def test_role_order_violations_are_counted_not_dropped_silently(tmp_path: Path, capsys) -> None:
    good = {"messages": COUNSELLING[0]["messages"]}
    bad = {"messages": [{"role": "user", "content": "一"}, {"role": "user", "content": "二"},
                        {"role": "assistant", "content": "三"}]}
    weird = {"messages": [{"role": "user", "content": "一"}, {"role": "system", "content": "二"}]}
    src = tmp_path / "in.jsonl"
    formats.write_jsonl(src, [good, bad, weird, {"no": "messages"}])
    out = tmp_path / "out.json"
    assert convert.main(["--from", "messages", "--to", "sharegpt", str(src), str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == {"role_order:consecutive_user": 1, "role_order:system_not_first": 1,
                                  "unreadable:missing_messages": 1}
    assert summary["rows_written"] == 1 and len(json.loads(out.read_text(encoding="utf-8"))) == 1
    assert convert.main(["--from", "messages", "--to", "sharegpt", str(src), str(out), "--strict"]) == 1


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    src = write_messages(tmp_path / "in.jsonl", COUNSELLING[:2])
    assert convert.main(["--from", "messages", "--to", "bianque", "--expand", "none", str(src),
                         str(tmp_path / "o.jsonl")]) == 2
    assert "--expand per-turn" in capsys.readouterr().err
    assert convert.main(["--from", "messages", "--to", "sharegpt", str(tmp_path / "nope.jsonl"),
                         str(tmp_path / "o.json")]) == 2
    assert convert.main(["--from", "messages", str(src)]) == 2
    (tmp_path / "broken.jsonl").write_text('{"messages": [}\n', encoding="utf-8")
    assert convert.main(["--from", "messages", "--to", "sharegpt", str(tmp_path / "broken.jsonl"),
                         str(tmp_path / "o.json")]) == 2
    assert "broken.jsonl:1" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.jsonl").exists()
    for action in convert.make_parser()._actions:
        assert action.help, action.dest


def test_expansion_stats_on_a_few_dialogues() -> None:
    sample = COUNSELLING[:15] + DOCTOR_LED[:5]
    tokenizer = tiny_lm.train_tokenizer(tiny_lm.dialogue_texts(sample), vocab_size=600)
    result = convert.expansion_stats(sample, tokenizer, "你是咨询师。")
    total = result["sources"]["all"]
    turns = sum(len(formats.assistant_indices(d["messages"])) for d in sample)
    assert total["conversations"] == total["compact_samples"] == 20
    assert total["per_turn_samples"] == turns
    assert total["compact_tokens"] < total["per_turn_tokens"] and total["supervised_tokens"] < total["compact_tokens"]
    assert result["per_turn_check"] == {"dialogues_checked": 20, "mismatches": 0}
    assert result["role_order_violations"] == {}
    broken = [{"source": "x", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                           {"role": "assistant", "content": "c"}]}]
    assert convert.expansion_stats(broken, tokenizer, "")["role_order_violations"] == {"x:consecutive_user": 1}
