"""Tests for mvp.assessment: instruments file, rule and model scoring, the screening flow, the CLI.

Offline and CPU only; no model is needed except in the one engine test, which uses the tiny model
fixture from conftest.py and is skipped when mvp.model.engine is missing.

    .venv/bin/python -m pytest tests/test_assessment.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mvp.assessment import (
    DEFAULT_INSTRUMENTS_PATH,
    LOW_CONFIDENCE,
    METHODS,
    AssessmentError,
    InstrumentError,
    ItemScore,
    Screening,
    build_model_messages,
    days_to_score,
    has_risk_words,
    load_instruments,
    parse_model_score,
    score_answer,
    score_model,
    score_rules,
)

REPO = Path(__file__).resolve().parent.parent
LABELLED = Path(__file__).resolve().parent / "data" / "assessment_answers.jsonl"
# Measured 2026-11 on the labelled set: written 0.982 exact / MAE 0.013, dialogue 0.885 / 0.128.
# The rules were developed on these answers, so the floors guard against regressions only.
WRITTEN_ACCURACY_FLOOR = 0.95
DIALOGUE_ACCURACY_FLOOR = 0.85
MAE_CEILING = 0.10


@pytest.fixture(scope="module")
def instruments():
    return load_instruments()


@pytest.fixture
def phq9(instruments):
    return instruments["phq9"]


@pytest.fixture
def gad7(instruments):
    return instruments["gad7"]


# --------------------------------------------------------------------------------------------------
# Instruments file


def test_instruments_load(phq9, gad7):
    assert len(phq9.items) == 9 and phq9.max_total == 27
    assert len(gad7.items) == 7 and gad7.max_total == 21
    assert phq9.items[0].text == "做事时提不起劲或没有兴趣"
    assert gad7.items[6].text == "感到似乎将有可怕的事情发生而害怕"
    assert [label for _, label in phq9.options] == ["完全不会", "好几天", "一半以上的天数", "几乎每天"]
    assert phq9.timeframe == gad7.timeframe == "过去两周"
    assert [i.no for i in phq9.items if i.risk_item] == [9]
    assert not any(i.risk_item for i in gad7.items)
    for item in phq9.items + gad7.items:
        assert item.question.endswith("？") and item.follow_up != item.question


def _write_variant(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(DEFAULT_INSTRUMENTS_PATH.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "instruments.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["instruments"]["phq9"]["items"][2].pop("question"), "instruments.phq9.items[2]"),
    (lambda d: d["instruments"]["gad7"]["items"][0].update(colour="red"), "instruments.gad7.items[0]"),
    (lambda d: d["instruments"]["phq9"]["items"][4].update(number=7), "instruments.phq9.items[4].number"),
    (lambda d: d["instruments"]["phq9"]["bands"][1].update(min=6), "instruments.phq9.bands[1]"),
    (lambda d: d["instruments"]["gad7"]["bands"][-1].update(max=20), "instruments.gad7.bands"),
    (lambda d: d["instruments"]["phq9"]["options"].pop(), "instruments.phq9.options"),
    (lambda d: d["instruments"]["phq9"]["items"][8].update(risk_item="yes"), "instruments.phq9.items[8].risk_item"),
    (lambda d: d["instruments"]["phq9"].update(name=""), "instruments.phq9.name"),
    (lambda d: d.update(extra=1), "(top level)"),
])
def test_malformed_instruments_name_file_and_key(tmp_path, mutate, key):
    path = _write_variant(tmp_path, mutate)
    with pytest.raises(InstrumentError) as err:
        load_instruments(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_unreadable_or_invalid_yaml(tmp_path):
    with pytest.raises(InstrumentError, match="cannot read"):
        load_instruments(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("instruments: [unclosed", encoding="utf-8")
    with pytest.raises(InstrumentError, match="not valid YAML"):
        load_instruments(bad)


@pytest.mark.parametrize("total, band", [
    (0, "无抑郁症状或极轻微"), (4, "无抑郁症状或极轻微"), (5, "轻度抑郁"), (9, "轻度抑郁"), (10, "中度抑郁"),
    (14, "中度抑郁"), (15, "中重度抑郁"), (19, "中重度抑郁"), (20, "重度抑郁"), (27, "重度抑郁"),
])
def test_phq9_bands(phq9, total, band):
    assert phq9.band(total) == band


@pytest.mark.parametrize("total, band", [
    (0, "无焦虑症状或极轻微"), (4, "无焦虑症状或极轻微"), (5, "轻度焦虑"), (9, "轻度焦虑"), (10, "中度焦虑"),
    (14, "中度焦虑"), (15, "重度焦虑"), (21, "重度焦虑"),
])
def test_gad7_bands(gad7, total, band):
    assert gad7.band(total) == band


def test_band_and_item_out_of_range(phq9, gad7):
    for bad in (-1, 28):
        with pytest.raises(AssessmentError):
            phq9.band(bad)
    with pytest.raises(AssessmentError):
        gad7.band(22)
    for bad in (0, 10, "1"):
        with pytest.raises(AssessmentError, match="1-9"):
            phq9.item(bad)


# --------------------------------------------------------------------------------------------------
# Rule scorer


@pytest.mark.parametrize("answer, score", [
    ("完全不会", 0), ("从来没有", 0), ("没有", 0), ("一天都没有", 0), ("一次都没有", 0),
    ("好几天", 1), ("偶尔", 1), ("有几天吧", 1), ("两三天", 1), ("有时候会", 1),
    ("一半以上的天数", 2), ("大部分时间", 2), ("超过一半", 2), ("十来天", 2), ("七八天", 2),
    ("几乎每天", 3), ("天天都这样", 3), ("每天", 3), ("一直这样", 3), ("总是这样", 3),
])
def test_rules_explicit(answer, score):
    result = score_rules(answer)
    assert (result.score, result.method) == (score, "rules")
    assert result.confidence >= LOW_CONFIDENCE and result.evidence


@pytest.mark.parametrize("answer, score", [
    ("0天", 0), ("零天", 0), ("就一天", 1), ("大概5天", 1), ("三四天", 1), ("6天", 1), ("7天", 2),
    ("差不多十天", 2), ("11天", 2), ("十二天", 3), ("十几天", 3), ("14天都是", 3),
    ("一周", 2), ("一周多", 2), ("两周", 3), ("整整两个星期都这样", 3), ("半个月了", 3),
    ("一周有三四天", 2), ("每周两次", 1), ("一周有四到五天", 2), ("大概3.5天", 1),
    ("这两周有两三天", 1), ("14天里有10天睡不好", 2), ("两周里有十二天左右", 3),
])
def test_rules_numerals(answer, score):
    assert score_rules(answer).score == score


@pytest.mark.parametrize("days, score", [(0, 0), (1, 1), (6, 1), (6.5, 1), (7, 2), (11, 2), (11.5, 2), (12, 3),
                                         (14, 3), (30, 3)])
def test_days_to_score_boundaries(days, score):
    assert days_to_score(days) == score


def test_rules_boundary_range_is_less_sure():
    assert score_rules("六七天").confidence < LOW_CONFIDENCE
    assert score_rules("三四天").confidence >= LOW_CONFIDENCE


@pytest.mark.parametrize("answer, score", [
    ("不是每天", 2), ("没有每天都这样", 2), ("不是每天，偶尔吧", 1), ("不是每天，但一大半时间是这样", 2),
    ("没有每天都这样，一周有两三天吧", 1), ("也不是没有，偶尔会", 1), ("不到一半", 1), ("不太经常", 1),
    ("不是每天都坐不住，一周大概三四天", 2), ("差不多十天左右都这样", 2),
])
def test_rules_negation(answer, score):
    assert score_rules(answer).score == score


def test_negated_every_day_alone_is_not_three_and_needs_review():
    result = score_rules("不是每天")
    assert result.score != 3 and result.confidence < LOW_CONFIDENCE


@pytest.mark.parametrize("answer, score", [
    ("没有，心情挺好的", 0), ("不会，我每天都挺有精神的", 0), ("有几天会这样，不过大部分时候还好", 1),
    ("以前会，最近两周没有了", 0), ("大部分时间都没什么力气", 2), ("没有，偶尔吧", 1),
    ("没有自残或自杀的想法，但我一直在努力面对", 0), ("是的，我经常翻来覆去睡不着。这样的情况几乎每晚都会发生", 3),
])
def test_rules_context(answer, score):
    assert score_rules(answer).score == score


@pytest.mark.parametrize("answer", ["还行吧", "有点吧", "嗯", "说不好", "累是累，但说不好有几天",
                                    "你们这个咨询要收费吗？", "", "   "])
def test_rules_vague_or_off_topic_is_none(answer):
    result = score_rules(answer)
    assert result.score is None and result.confidence < LOW_CONFIDENCE


def test_rules_hedge_lowers_confidence():
    assert score_rules("可能有几天吧").confidence < score_rules("有几天").confidence


def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_shape(instruments):
    rows = _labelled()
    assert len(rows) >= 220
    keys = set()
    for row in rows:
        assert row["instrument"] in instruments
        instruments[row["instrument"]].item(row["item"])
        assert row["score"] is None or row["score"] in (0, 1, 2, 3)
        assert row["kind"] in {"explicit", "vague", "negated", "numeric", "colloquial", "offtopic", "dialogue"}
        assert row["answer"].strip()
        keys.add((row["instrument"], row["item"], row["answer"]))
    assert len(keys) == len(rows), "duplicate answers in the labelled set"
    written = [r for r in rows if r["kind"] != "dialogue"]
    assert len(written) >= 220
    assert {r["instrument"] for r in written} == {"phq9", "gad7"}
    assert sum(r["score"] is None for r in written) >= 20


def test_rule_accuracy_floor(instruments):
    """Exact match and MAE of the rule layer on the labelled set (see bench/bench_assessment.py)."""
    hits: dict[str, list[bool]] = {"written": [], "dialogue": []}
    errors = []
    for row in _labelled():
        result = score_rules(row["answer"], instruments[row["instrument"]])
        hits["dialogue" if row["kind"] == "dialogue" else "written"].append(result.score == row["score"])
        if result.score is not None and row["score"] is not None:
            errors.append(abs(result.score - row["score"]))
    written = sum(hits["written"]) / len(hits["written"])
    dialogue = sum(hits["dialogue"]) / len(hits["dialogue"])
    assert written >= WRITTEN_ACCURACY_FLOOR, written
    assert dialogue >= DIALOGUE_ACCURACY_FLOOR, dialogue
    assert sum(errors) / len(errors) <= MAE_CEILING


# --------------------------------------------------------------------------------------------------
# Model scorer and combination


@dataclass
class _Reply:
    text: str


class FakeEngine:
    """Has the engine's generate(messages, params) -> object with .text; records the calls."""

    def __init__(self, text: str = "2", error: Exception | None = None) -> None:
        self.text, self.error, self.calls = text, error, []

    def generate(self, messages, params):
        self.calls.append((messages, params))
        if self.error:
            raise self.error
        return _Reply(self.text)


@pytest.mark.parametrize("text, score", [
    ("2", 2), (" 3。", 3), ("答案：1", 1), ("0分", 0), ("选 2 = 一半以上的天数", 2), ("几乎每天", 3),
    ("好几天吧", 1), ("完全不会", 0), ("一半以上", 2), ("10", None), ("5", None), ("我不知道", None), ("", None),
])
def test_parse_model_score(text, score):
    assert parse_model_score(text) == score


def test_model_prompt_and_params(phq9):
    pytest.importorskip("mvp.model.engine")
    engine = FakeEngine("3")
    result = score_model("天天都睡不着", phq9.item(3), engine, phq9)
    assert result == ItemScore(3, "model", result.confidence, result.evidence)
    messages, params = engine.calls[0]
    assert [m["role"] for m in messages] == ["system", "user"]
    prompt = messages[-1]["content"]
    for text in ("入睡困难、睡不安稳或睡眠过多", "天天都睡不着", "0 = 完全不会", "3 = 几乎每天", "只回答一个数字 0-3"):
        assert text in prompt
    assert params.temperature == 0 and params.max_new_tokens == 8
    assert score_model("天天都睡不着", phq9.item(3), FakeEngine("不确定")) is None


def test_build_model_messages_without_instrument(phq9):
    messages = build_model_messages("偶尔", phq9.item(1))
    assert "1 = 好几天" in messages[-1]["content"]


def test_score_answer_combinations(phq9):
    pytest.importorskip("mvp.model.engine")
    agree = score_answer("几乎每天都这样", phq9, 1, FakeEngine("3"))
    assert (agree.score, agree.method, agree.needs_review) == (3, "model+rules", False)
    disagree = score_answer("几乎每天都这样", phq9, 1, FakeEngine("1"))
    assert disagree.needs_review and disagree.method == "rules" and disagree.score == 3
    loose = score_answer("经常", phq9, 1, FakeEngine("3"))  # rules less sure: the model's score stands
    assert loose.needs_review and (loose.method, loose.score) == ("model", 3)
    model_only = score_answer("还行吧", phq9, 1, FakeEngine("1"))
    assert (model_only.score, model_only.method, model_only.needs_review) == (1, "model", True)
    rules_only = score_answer("偶尔", phq9, 1, FakeEngine("嗯"))
    assert (rules_only.score, rules_only.method, rules_only.needs_review) == (1, "rules", True)
    neither = score_answer("今天天气真热", phq9, 1, FakeEngine("?"))
    assert (neither.score, neither.method, neither.needs_review) == (None, "none", True)
    failing = score_answer("偶尔", phq9, 1, FakeEngine(error=RuntimeError("boom")))
    assert (failing.score, failing.method, failing.needs_review) == (1, "rules", True)
    for result in (agree, disagree, loose, model_only, rules_only, neither, failing):
        assert result.method in METHODS


def test_score_answer_without_engine(phq9, gad7):
    assert score_answer("几乎每天", gad7, 7) == ItemScore(3, "rules", 0.9, "“几乎每天”→3", False)
    assert score_answer("还行吧", phq9, 2).needs_review
    with pytest.raises(AssessmentError):
        score_answer("偶尔", gad7, 8)


def test_score_answer_with_tiny_engine(phq9, request):
    """The real GenerationParams and Engine.generate path (random tiny model: any outcome is valid)."""
    pytest.importorskip("mvp.model.engine")
    pytest.importorskip("torch")
    engine = request.getfixturevalue("tiny_engine")
    result = score_answer("有几天吧", phq9, 1, engine)
    assert result.method in METHODS and result.score in (None, 0, 1, 2, 3)


# --------------------------------------------------------------------------------------------------
# Screening flow


def test_screening_asks_items_in_order(phq9):
    screening = Screening(phq9)
    asked = []
    for _ in phq9.items:
        asked.append(screening.next_prompt())
        step = screening.answer("好几天")
        assert not step.follow_up
    assert asked == [item.question for item in phq9.items]
    assert step.done and screening.done and screening.current_item is None
    assert screening.next_prompt() == phq9.closing
    assert screening.total == 9 and screening.band == "轻度抑郁"
    with pytest.raises(AssessmentError, match="finished"):
        screening.answer("偶尔")


def test_follow_up_once_then_move_on(gad7):
    screening = Screening(gad7)
    step = screening.answer("还行吧")
    assert step.follow_up and step.item_no == 1 and step.score.score is None
    assert screening.awaiting_follow_up and screening.next_prompt() == gad7.items[0].follow_up
    step = screening.answer("说不好")  # still vague: no second follow-up
    assert not step.follow_up and step.item_no == 1 and step.score.score is None
    assert screening.current_item == 2 and screening.next_prompt() == gad7.items[1].question
    record = screening.items[0]
    assert record["needs_review"] and record["answer"] == "还行吧 / 说不好" and record["score"] is None
    step = screening.answer("有点吧")
    assert step.follow_up
    step = screening.answer("一周有四五天")  # the follow-up answer scores the item
    assert (step.item_no, step.score.score, step.follow_up) == (2, 2, False)
    assert not screening.items[1]["needs_review"]
    assert screening.total == 2


def test_risk_on_phq9_item_9(phq9):
    screening = Screening(phq9)
    for _ in range(8):
        assert not screening.answer("没有").risk
    step = screening.answer("有几天会这样想")
    assert step.risk and step.done and screening.risk
    safe = Screening(phq9)
    for _ in range(9):
        step = safe.answer("完全没有")
    assert not step.risk and not safe.risk and safe.total == 0


def test_risk_words_and_unclear_item_9(phq9):
    screening = Screening(phq9)
    assert screening.answer("几乎每天，有时候想死").risk  # risk words on any item
    unclear = Screening.from_dict(Screening(phq9).to_dict())  # default instruments file
    for _ in range(8):
        unclear.answer("没有")
    assert unclear.answer("不想回答").follow_up
    assert unclear.answer("不想说").risk  # item 9 still unclear after the follow-up: flag it
    assert has_risk_words("我真的不想活了")
    assert not has_risk_words("我没想过自杀")
    assert not has_risk_words("从来没有想过要伤害自己")
    assert has_risk_words("有时候会想，活着没什么意思")
    assert not has_risk_words("最近睡得不好")


def test_correction_changes_total(phq9):
    screening = Screening(phq9)
    for answer in ("几乎每天", "好几天", "没有"):
        screening.answer(answer)
    assert screening.total == 4 and screening.band == "无抑郁症状或极轻微"
    screening.correct(3, 2)
    assert screening.total == 6 and screening.band == "轻度抑郁"
    assert screening.items[2]["clinician_score"] == 2 and screening.items[2]["score"] == 0
    screening.correct(3, None)
    assert screening.total == 4
    for item_no, score in ((4, 1), (1, 4), (1, -1), (1, True), (0, 1)):
        with pytest.raises(AssessmentError):
            screening.correct(item_no, score)


def test_to_dict_round_trip(phq9, instruments):
    screening = Screening(phq9)
    screening.answer("几乎每天")
    screening.answer("还行吧")  # pending follow-up survives the round trip
    screening.correct(1, 2)
    data = json.loads(json.dumps(screening.to_dict(), ensure_ascii=False))
    restored = Screening.from_dict(data, instruments)
    assert restored.to_dict() == screening.to_dict()
    assert restored.items == screening.items and restored.total == 2
    assert restored.awaiting_follow_up and restored.next_prompt() == phq9.items[1].follow_up
    assert restored.answer("七八天").score.score == 2 and restored.total == 4


@pytest.mark.parametrize("data", [
    None, {}, {"version": 99}, {"version": 1, "instrument": "bdi", "records": [], "pending": None},
    {"version": 1, "instrument": "phq9", "records": [{"item_no": 1}], "pending": None},
    {"version": 1, "instrument": "phq9", "pending": None},
])
def test_from_dict_rejects_malformed(data, instruments):
    with pytest.raises(AssessmentError):
        Screening.from_dict(data, instruments)


def test_from_dict_rejects_bad_scores(phq9, instruments):
    screening = Screening(phq9)
    screening.answer("偶尔")
    data = screening.to_dict()
    data["records"][0]["score"] = 7
    with pytest.raises(AssessmentError, match="score 7"):
        Screening.from_dict(data, instruments)


def test_screening_rejects_non_text(phq9):
    with pytest.raises(AssessmentError):
        Screening(phq9).answer(3)


# --------------------------------------------------------------------------------------------------
# Command line


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvp.assessment", *args], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", cwd=REPO, timeout=60)


def test_cli_plain_lines():
    proc = _cli("score", "--instrument", "phq9", "--item", "3", stdin="几乎每天都睡不好\n\n还行吧\n")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows == [
        {"answer": "几乎每天都睡不好", "score": 3, "method": "rules", "needs_review": False},
        {"answer": "还行吧", "score": None, "method": "rules", "needs_review": True},
    ]
    assert "几乎每天" in proc.stdout  # ensure_ascii=False


def test_cli_jsonl():
    stdin = "\n".join(json.dumps({"answer": a, "id": i}, ensure_ascii=False) for i, a in enumerate(["偶尔", "一周有四五天"]))
    proc = _cli("score", "--instrument", "gad7", "--item", "2", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["score"] for line in proc.stdout.splitlines()] == [1, 2]


@pytest.mark.parametrize("args, stdin, message", [
    (("score", "--instrument", "phq9", "--item", "10"), "偶尔", "--item must be 1-9"),
    (("score", "--instrument", "gad7", "--item", "0"), "偶尔", "--item must be 1-7"),
    (("score", "--instrument", "bdi", "--item", "1"), "偶尔", "unknown instrument 'bdi'"),
    (("score", "--instrument", "phq9", "--item", "x"), "偶尔", "invalid int value"),
    (("score", "--instrument", "phq9", "--item", "1"), '{"text": "偶尔"}', "line 1"),
    (("score", "--instrument", "phq9", "--item", "1"), '{"answer": ', "not valid JSON"),
])
def test_cli_errors(args, stdin, message):
    proc = _cli(*args, stdin=stdin)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_help_documents_every_flag():
    proc = _cli("score", "--help")
    assert proc.returncode == 0
    for flag in ("--instrument", "--item", "--model", "--instruments-file"):
        assert flag in proc.stdout
    assert proc.stdout.count("(default") >= 2


def test_shared_stdin_reader_strict_and_lenient():
    from mvp.jsonl import JsonlError, read_texts

    lines = ["偶尔\n", "\n", '{"answer": "每天", "id": 1}\n', "{不是JSON\n"]
    assert list(read_texts(lines, "answer", strict=False)) == ["偶尔", "每天", "{不是JSON"]
    with pytest.raises(JsonlError, match="line 4"):
        list(read_texts(lines, "answer", strict=True))
    with pytest.raises(JsonlError, match='"answer"'):
        list(read_texts(['{"text": "x"}'], "answer", strict=True))


def test_assessment_modules_import_no_circle():
    """rules imports only instruments; nothing in the wing imports the app or train/."""
    import ast

    wing = REPO / "mvp" / "assessment"
    for path in wing.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(m.startswith(("train", "mvp.app", "mvp.store")) for m in imported), path
        if path.name == "rules.py":
            assert {m for m in imported if m.startswith("mvp.")} == {"mvp.assessment.instruments"}
        if path.name == "instruments.py":
            assert not any(m.startswith("mvp.assessment") for m in imported)
