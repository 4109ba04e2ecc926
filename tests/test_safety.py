"""Tests for mvp.safety: crisis detection, rules-file validation, CLI, reply screening, model check.

Run: .venv/bin/python -m pytest tests/test_safety.py -q   (offline, CPU, a few seconds)
"""
from __future__ import annotations

import json
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mvp import safety
from mvp.safety import (CATEGORIES, CATEGORY_NAMES, CRISIS_INSTRUCTION, CrisisResources, Detection, Resource,
                        RuleSet, SafetyConfigError, SafetyError, combine, detect, load_resources, model_check,
                        parse_model_answer, safety_message, screen_reply)

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "tests" / "data" / "crisis_labelled.jsonl"
RECALL_GOAL = 0.95        # suicide and self_harm, rule layer alone
PRECISION_GOAL = 0.85     # every category


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.load()


# --- detection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, category", [
    ("我真的不想活了", "suicide"),
    ("活着没意思", "suicide"),
    ("有时候想一了百了", "suicide"),
    ("安眠药攒了很多", "suicide"),
    ("遗书已经写好了", "suicide"),
    ("我想从楼上跳下去", "suicide"),
    ("我忍不住又割腕了", "self_harm"),
    ("我会用烟头烫自己", "self_harm"),
    ("我真想杀了他", "harm_others"),
    ("他又打我了", "abuse"),
    ("我被家暴了", "abuse"),
    ("我刚才吃了一整瓶药", "medical"),
    ("我爸倒在地上叫不醒", "medical"),
])
def test_each_category_detected(rules: RuleSet, text: str, category: str) -> None:
    det = rules.detect(text)
    assert category in det.categories
    assert det.is_crisis


@pytest.mark.parametrize("text", [
    "累死了", "笑死我了", "气死了", "热死了", "烦死了", "今天加班，累得要死", "电脑又死机了",
    "我们周末玩剧本杀", "他打了我好几个电话", "打死我也不去",
    "我从来没想过自杀", "我不会自杀的", "我不想死", "我没有伤害自己的想法",
    "新闻里说有人自杀了", "在看一本关于自杀的书", "教材问题：如何评估来访者的自杀风险",
    "我以前有过想死的念头，但现在没有了", "我不想活得这么累了", "最近心情很低落",
    "切菜时不小心划伤了手", "我表姐前几年自杀了，我很想她",
])
def test_idioms_negations_and_context_not_detected(rules: RuleSet, text: str) -> None:
    assert rules.detect(text) == Detection((), ())


def test_negation_only_in_the_same_clause(rules: RuleSet) -> None:
    assert rules.detect("我没事，就是想死").categories == ("suicide",)
    assert rules.detect("是不是我死了大家就开心了").categories == ("suicide",)   # a question, not a negation


def test_context_cues_do_not_hide_the_client(rules: RuleSet) -> None:
    assert rules.detect("我是护士，我想死").categories == ("suicide",)
    assert rules.detect("我在这个家里的角色就是多余的，我想死").categories == ("suicide",)
    assert not rules.detect("我是一名护士，今天抢救了一个喝农药的病人").is_crisis


def test_context_override_by_first_person(rules: RuleSet) -> None:
    assert rules.detect("看了那本书，我也想死").categories == ("suicide",)
    assert rules.detect("看了那本书。我想死").categories == ("suicide",)      # context is per sentence


def test_past_attempt_flagged_unless_resolved(rules: RuleSet) -> None:
    assert rules.detect("上个月我自杀过一次").categories == ("suicide",)
    assert not rules.detect("高中的时候割过手，现在已经很久没有了").is_crisis


def test_also_categories_and_order(rules: RuleSet) -> None:
    det = rules.detect("我把攒的安眠药都吞了")
    assert det.categories == ("suicide", "medical")      # CATEGORIES order, medical rule adds suicide
    assert rules.detect("我想和他同归于尽").categories == ("suicide", "harm_others")


def test_evidence_names_rule_and_original_text(rules: RuleSet) -> None:
    det = rules.detect("我 不 想 活 了")
    assert det.evidence and det.evidence[0].startswith("suicide.passive_wish:")
    assert det.evidence[0].endswith("不 想 活")                    # cut from the original, spaces kept
    det = rules.detect("自殺的念頭一直在")                            # traditional characters
    assert det.categories == ("suicide",) and "自殺" in det.evidence[0]
    assert rules.detect("今天天气不错").evidence == ()


def test_english_mixed_and_full_width(rules: RuleSet) -> None:
    assert "suicide" in rules.detect("I really WANT TO DIE").categories
    assert "self_harm" in rules.detect("I cut myself again").categories
    assert "suicide" in rules.detect("我想自杀！！").categories


def test_module_level_detect_uses_default_rules() -> None:
    assert detect("我不想活了").categories == ("suicide",)
    assert safety.default_ruleset() is safety.default_ruleset()


def test_detect_rejects_non_text(rules: RuleSet) -> None:
    with pytest.raises(TypeError):
        rules.detect(None)  # type: ignore[arg-type]


def test_category_names_cover_categories() -> None:
    assert tuple(CATEGORY_NAMES) == CATEGORIES
    assert CATEGORY_NAMES["abuse"] == "遭受暴力或虐待"
    assert Detection(("medical",)).names() == ("急性医疗紧急情况",)


# --- the labelled set ------------------------------------------------------------------------------

def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_size_and_composition() -> None:
    rows = _labelled()
    assert len(rows) >= 340
    assert len({r["text"] for r in rows}) == len(rows)
    support = {c: sum(c in r["categories"] for r in rows) for c in CATEGORIES}
    assert support["suicide"] >= 60 and support["self_harm"] >= 40 and support["harm_others"] >= 30
    assert support["abuse"] >= 30 and support["medical"] >= 25
    assert sum(not r["categories"] for r in rows) >= 120
    assert all(set(r["categories"]) <= set(CATEGORIES) for r in rows)


def test_rule_layer_recall_and_precision_on_labelled_set(rules: RuleSet) -> None:
    tp = dict.fromkeys(CATEGORIES, 0)
    fp, fn = dict(tp), dict(tp)
    for row in _labelled():
        got, gold = set(rules.detect(row["text"]).categories), set(row["categories"])
        for c in CATEGORIES:
            tp[c] += c in got and c in gold
            fp[c] += c in got and c not in gold
            fn[c] += c in gold and c not in got
    for c in CATEGORIES:
        precision = tp[c] / (tp[c] + fp[c])
        assert precision >= PRECISION_GOAL, (c, precision)
    for c in ("suicide", "self_harm"):
        recall = tp[c] / (tp[c] + fn[c])
        assert recall >= RECALL_GOAL, (c, recall)


def test_prefilter_never_changes_results(rules: RuleSet) -> None:
    texts = [r["text"] for r in _labelled()]
    fast = [rules.detect(t) for t in texts]
    rules.prefilter = False
    try:
        assert [rules.detect(t) for t in texts] == fast
    finally:
        rules.prefilter = True


def test_prefilter_windows_never_change_results_on_long_texts(rules: RuleSet) -> None:
    """Long texts take the windowed path (mvp/safety/scan.py): the same detections as full scans."""
    texts = [r["text"] for r in _labelled()]
    longs = ["。".join(texts[i:i + 60]) for i in range(0, len(texts) - 60, 60)]     # ~900 chars, many crises
    longs += ["，".join(texts[i::7])[:4000] for i in range(7)]                        # up to 4,000 chars
    longs += ["今天天气不错，我们去公园散步了。" * 40 + "我真的不想活了", "想死" * 2000]
    assert all(len(t) >= 400 for t in longs)
    fast = [rules.detect(t) for t in longs]
    assert sum(d.is_crisis for d in fast) >= len(longs) // 2
    for text in longs:                             # every match of every pattern, windowed vs whole scans
        norm, _, plan = rules._prepare_full(text)
        assert plan is not None
        spans = lambda p: sorted((r.id, m.span()) for r, m in rules._matches(norm, p))  # noqa: E731
        assert spans(plan) == spans(None)
    filler = "我最近打了很多电话找工作，想了很久，电脑死机了，心里很乱。"       # trigger characters, no crisis
    for crisis in [r["text"] for r in _labelled() if r["categories"]][::9]:
        alone = rules.detect(crisis).categories
        assert rules.detect(filler * 30 + crisis).categories == alone, crisis   # found at the end of 800+ chars
    rules.prefilter = False
    try:
        assert [rules.detect(t) for t in longs] == fast
    finally:
        rules.prefilter = True


# --- rules file validation -------------------------------------------------------------------------

def _rules_data() -> dict:
    return yaml.safe_load(safety.DEFAULT_RULES_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, key", [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["categories"].pop("medical"), "categories.medical"),
    (lambda d: d["categories"].update(gambling=[]), "categories.gambling"),
    (lambda d: d["categories"]["suicide"][0]["patterns"].append("(unclosed"), "categories.suicide[0].patterns[3]"),
    (lambda d: d["categories"]["abuse"][1].update(also=["sadness"]), "categories.abuse[1].also"),
    (lambda d: d["categories"]["abuse"][1].update(id=d["categories"]["abuse"][0]["id"]), "categories.abuse[1].id"),
    (lambda d: d["categories"]["abuse"][0].update(patterns=["<NOPE>"]), "categories.abuse[0].patterns[0]"),
    (lambda d: d["macros"].update(RELATION="<PERSON>"), "macros.PERSON"),
    (lambda d: d["categories"]["abuse"][0].update(negation="yes"), "categories.abuse[0].negation"),
    (lambda d: d["categories"]["self_harm"][0].pop("patterns"), "categories.self_harm[0].patterns"),
    (lambda d: d["settings"].update(negation_window=-1), "settings.negation_window"),
    (lambda d: d["negation"].update(immediate=["不要"]), "negation.immediate"),
    (lambda d: d["reply_screening"].pop("dismissive"), "reply_screening.dismissive"),
    (lambda d: d["replacements"].update(default="请拨打 {hotline}"), "replacements.default"),
])
def test_malformed_rules_name_file_and_key(tmp_path: Path, change, key: str) -> None:
    data = _rules_data()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(SafetyConfigError) as info:
        RuleSet.load(path)
    assert str(path) in str(info.value)
    assert f"'{key}'" in str(info.value)


def test_missing_and_unparsable_rules_file(tmp_path: Path) -> None:
    with pytest.raises(SafetyConfigError, match="file not found"):
        RuleSet.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: [unclosed", encoding="utf-8")
    with pytest.raises(SafetyConfigError, match="not valid YAML"):
        RuleSet.load(bad)


def test_a_clinician_can_add_a_rule(tmp_path: Path) -> None:
    data = _rules_data()
    data["categories"]["suicide"].append({"id": "new_phrase", "patterns": ["去见上帝"]})
    rules = RuleSet.load(_write(tmp_path, data))
    assert rules.detect("我想去见上帝").evidence == ("suicide.new_phrase:去见上帝",)


# --- command line ----------------------------------------------------------------------------------

def _cli(args: list[str], stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvp.safety", *args], input=stdin.encode("utf-8"),
                          capture_output=True, cwd=ROOT, timeout=60)


def test_cli_check_plain_and_jsonl_lines() -> None:
    stdin = "我不想活了\n\n累死了\n" + json.dumps({"id": 7, "text": "他又打我了"}, ensure_ascii=False) + "\n{不是JSON\n"
    proc = _cli(["check"], stdin)
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["我不想活了", "累死了", "他又打我了", "{不是JSON"]
    assert rows[0]["categories"] == ["suicide"] and rows[0]["evidence"]
    assert rows[1] == {"text": "累死了", "categories": [], "evidence": []}
    assert rows[2]["categories"] == ["abuse"]
    assert "我不想活了" in proc.stdout.decode("utf-8")          # ensure_ascii=False


def test_cli_rules_flag_and_errors(tmp_path: Path) -> None:
    data = _rules_data()
    data["categories"]["suicide"].append({"id": "new_phrase", "patterns": ["去见上帝"]})
    proc = _cli(["check", "--rules", str(_write(tmp_path, data))], "我想去见上帝\n")
    assert json.loads(proc.stdout)["evidence"] == ["suicide.new_phrase:去见上帝"]
    proc = _cli(["check", "--rules", str(tmp_path / "missing.yaml")], "x\n")
    assert proc.returncode == 2 and b"error:" in proc.stderr and b"Traceback" not in proc.stderr


def test_cli_help_and_screen() -> None:
    out = _cli(["check", "--help"], "").stdout.decode()
    assert "--rules" in out and "rules file" in out
    out = _cli(["screen", "--help"], "").stdout.decode()
    assert "--crisis" in out and "--rules" in out
    proc = _cli(["screen", "--crisis"], "你可以去死\n谢谢你愿意告诉我\n")
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert rows[0]["blocked"] and rows[0]["reasons"] == ["encouragement"] and rows[0]["replacement"]
    assert rows[1]["blocked"] is False and rows[1]["replacement"] is None


# --- reply screening -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, reason", [
    ("安眠药的致死剂量大概是……", "method_details"),
    ("一般吃30片以上就会致命", "method_details"),
    ("割的时候竖着割会更深", "method_details"),
    ("从20楼跳下去一般来说", "method_details"),
    ("你可以去死", "encouragement"),
    ("既然这么痛苦，那就结束吧", "encouragement"),
    ("别想太多就好了", "dismissive"),
    ("你只是矫情而已", "dismissive"),
    ("我是真人医生，你可以相信我", "human_claim"),
    ("我是人类咨询师", "human_claim"),
])
def test_screen_reply_blocks_each_kind(reply: str, reason: str) -> None:
    res = screen_reply(reply)
    assert res.blocked and reason in res.reasons
    assert res.text != reply and res.text
    assert any(e.startswith(reason + ":") for e in res.evidence)


@pytest.mark.parametrize("reply", [
    "听起来你最近真的很辛苦，愿意多说说发生了什么吗？",
    "我是一个 AI 心理支持助手，不是真人医生。",
    "我不会告诉你任何伤害自己的方法，但我很想陪着你。",
    "医生开的药要按医嘱服用哦。",
    "你现在在服用什么药？剂量是多少？",
    "头脑一片空白的时候，可以先深呼吸。",
])
def test_screen_reply_passes_normal_replies(reply: str) -> None:
    res = screen_reply(reply)
    assert not res.blocked and res.text == reply and res.reasons == ()


def test_crisis_only_patterns_and_replacements() -> None:
    crisis = Detection(("suicide",), ("suicide.explicit:自杀",))
    reply = "先别想太多，睡一觉就好了"
    assert not screen_reply(reply).blocked
    res = screen_reply(reply, crisis)
    assert res.blocked and res.reasons == ("dismissive",)
    resources = load_resources()
    assert "12356" in res.text and resources.emergency_medical in res.text
    assert screen_reply("医生说的剂量是多少？", crisis).reasons == ("method_details",)
    assert not screen_reply("脑子里一片空白也没关系", crisis).blocked
    res = screen_reply("我是真人医生")
    assert "AI" in res.text and "12356" not in res.text


# --- resources and messages ------------------------------------------------------------------------

def test_default_resources() -> None:
    res = load_resources()
    assert [r.phone for r in res.hotlines] == ["12356", "010-82951332", "400-161-9995"]
    assert (res.emergency_medical, res.emergency_police) == ("120", "110")
    assert "VERIFY" in safety.DEFAULT_RESOURCES_PATH.read_text(encoding="utf-8")


def test_malformed_resources_name_key(tmp_path: Path) -> None:
    path = tmp_path / "res.yaml"
    path.write_text("hotlines:\n  - name: 热线\n    phone: call-me\nemergency: {medical: '120', police: '110'}\n",
                    encoding="utf-8")
    with pytest.raises(SafetyConfigError, match=r"'hotlines\[0\]\.phone'"):
        load_resources(path)
    path.write_text("hotlines: []\nemergency: {medical: '120'}\n", encoding="utf-8")
    with pytest.raises(SafetyConfigError, match="'hotlines'"):
        load_resources(path)


def test_safety_message_lists_resources_and_is_tailored() -> None:
    res = load_resources()
    assert safety_message(Detection(), res) == ""
    msg = safety_message(Detection(("suicide", "medical")), res)
    for number in ("12356", "010-82951332", "400-161-9995", "120", "110"):
        assert number in msg
    assert msg.index("120") < msg.index("12356")           # call 120 now comes before the hotlines
    assert "110 报警" in safety_message(Detection(("abuse",)), res)
    assert "伤害别人" in safety_message(Detection(("harm_others",)), res)
    custom = CrisisResources((Resource("本地热线", "0571-88888888"),), "999", "998")
    msg = safety_message(Detection(("medical",)), custom)
    assert "本地热线：0571-88888888" in msg and "999" in msg and "12356" not in msg


def test_crisis_instruction() -> None:
    assert "安全" in CRISIS_INSTRUCTION and "方法" in CRISIS_INSTRUCTION and "120" in CRISIS_INSTRUCTION


# --- optional model check --------------------------------------------------------------------------

@dataclass
class _Reply:
    text: str


class _FakeEngine:
    """The documented engine interface: generate(messages, params) -> object with .text."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[list[dict], object]] = []

    def generate(self, messages: list[dict], params: object) -> _Reply:
        self.calls.append((messages, params))
        return _Reply(self.answer)


@pytest.mark.parametrize("answer, expected", [
    ('{"categories": ["suicide", "medical"]}', ("suicide", "medical")),
    ('分类结果：{"categories": ["自伤"]}。', ("self_harm",)),
    ('{"categories": []}', ()),
    ('{"categories": "abuse"}', ("abuse",)),
    ("这条消息属于自杀风险和自伤。", ("suicide", "self_harm")),
    ("不属于自杀风险。", ()),
    ("没有涉及自伤，但属于遭受暴力或虐待", ("abuse",)),
    ("无", ()),
    ("嗯……我不确定", ()),
    ("", ()),
])
def test_parse_model_answer(answer: str, expected: tuple) -> None:
    assert parse_model_answer(answer) == expected


def test_model_check_with_fake_engine() -> None:
    engine = _FakeEngine('{"categories": ["harm_others"]}')
    params = object()
    det = model_check("我想让他消失", engine, params=params)
    assert det.categories == ("harm_others",) and det.evidence[0].startswith("model.harm_others:")
    messages, used = engine.calls[0]
    assert used is params
    assert messages[0]["role"] == "system" and "JSON" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "我想让他消失"}


def test_model_check_builds_default_params_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass
    class GenerationParams:
        max_new_tokens: int = 256
        do_sample: bool = True
        seed: int | None = None

    monkeypatch.setitem(sys.modules, "mvp.model.engine", types.SimpleNamespace(GenerationParams=GenerationParams))
    engine = _FakeEngine("无")
    assert model_check("你好", engine).categories == ()
    params = engine.calls[0][1]
    assert params == GenerationParams(max_new_tokens=safety.MODEL_CHECK_MAX_NEW_TOKENS, do_sample=False, seed=0)


def test_model_check_without_engine_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mvp.model.engine", None)          # import raises ImportError
    with pytest.raises(SafetyError, match="params="):
        model_check("你好", _FakeEngine("无"))


def test_combine_is_a_union_the_model_cannot_remove() -> None:
    rule = Detection(("suicide",), ("suicide.passive_wish:不想活",))
    assert combine(rule, Detection()) == rule
    assert combine(rule, None) == rule
    both = combine(rule, Detection(("medical", "suicide"), ("model.medical:x",)))
    assert both.categories == ("suicide", "medical")
    assert both.evidence == ("suicide.passive_wish:不想活", "model.medical:x")
    assert combine(Detection(), Detection(("abuse",), ("model.abuse:y",))).categories == ("abuse",)


# --- categories live in the rules file only ----------------------------------------------------------

def test_a_new_category_is_a_yaml_change_only(tmp_path: Path) -> None:
    data = _rules_data()
    data["category_info"]["gambling"] = {"name": "赌博失控", "description": "无法控制的赌博、为赌博借高利贷",
                                         "advice": "如果你因为赌债处在危险中，可以拨打 {police}。",
                                         "aliases": ["赌博"]}
    data["categories"]["gambling"] = [{"id": "debt", "patterns": ["赌[^，。]{0,4}(高利贷|网贷)"]}]
    rules = RuleSet.load(_write(tmp_path, data))
    det = rules.detect("为了赌又借了高利贷")
    assert det.categories == ("gambling",) and det.names() == ("赌博失控",)
    assert "赌博失控" in "".join(Detection(("gambling",)).names())
    assert "如果你因为赌债处在危险中，可以拨打 110" in safety_message(det, load_resources(), rules=rules)
    assert "gambling：无法控制的赌博" in safety.model_check_prompt(rules)
    assert parse_model_answer('{"categories": ["赌博"]}', rules) == ("gambling",)
    assert combine(det, Detection(("suicide",))).categories == ("suicide", "gambling")
    proc = _cli(["check", "--rules", str(_write(tmp_path, data))], "为了赌又借了高利贷\n")
    assert json.loads(proc.stdout)["categories"] == ["gambling"]


def test_category_info_validation(tmp_path: Path) -> None:
    data = _rules_data()
    data["category_info"]["medical"].pop("advice")
    with pytest.raises(SafetyConfigError, match="'category_info.medical.advice'"):
        RuleSet.load(_write(tmp_path, data))
    data = _rules_data()
    data["category_info"]["abuse"]["advice"] = "请拨打 {hotline}"
    with pytest.raises(SafetyConfigError, match="'category_info.abuse.advice'"):
        RuleSet.load(_write(tmp_path, data))


def test_model_prompt_is_built_from_the_rules_file() -> None:
    prompt = safety.model_check_prompt()
    for cat in CATEGORIES:
        assert f"{cat}：" in prompt


def test_a_context_or_past_cue_binds_only_within_its_reach(rules: RuleSet) -> None:
    """One 电影 / 以前…现在好了 in a run-on message must not silence a crisis far from it."""
    assert not rules.detect("昨天看了一部电影，主角最后自杀了").is_crisis
    assert not rules.detect("我以前想过自杀，现在已经好了").is_crisis
    filler = "，上班很忙，开了三个会" * 12                                     # ~130 chars, no full stop
    assert "suicide" in rules.detect("昨天看了一部电影" + filler + "，我真的不想活了").categories
    assert "suicide" in rules.detect("以前" + filler + "，我真的不想活了" + filler + "，现在已经好了").categories
