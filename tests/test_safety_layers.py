"""Tests for the layered crisis detection: negation binding, disguised spellings, the classifier,
evaluation guards, fail-safe detection and the streaming reply screen (mvp/safety).

Run: .venv/bin/python -m pytest tests/test_safety_layers.py -q   (offline, CPU; the first run builds
the classifier from shipped data, about 30 s, unless models/safety/classifier.json.gz is current)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvp import safety
from mvp.safety import ReplyStream, RuleSet, classifier, screen_reply
from mvp.safety.data import (
    RISK_WORDS,
    WEAK_SOURCE,
    Example,
    corpus_dialogues,
    corpus_turns,
    is_heldout_dialogue,
    load_examples,
    training_examples,
    weak_negatives,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.load()


# --- rules: negation bound to its phrase, disguised spellings --------------------------------------

@pytest.mark.parametrize("text, category", [
    ("别管我了我就是想死", "suicide"),
    ("你别劝我我已经决定跳下去了", "suicide"),
    ("谁也别拦着我我要割腕", "self_harm"),
    ("我不想让家人知道我想死", "suicide"),
    ("这几天脑子里一直在想怎么去死", "suicide"),
    ("我觉得活下去已经没有任何意义了，只剩下结束这一条路", "suicide"),
    ("实在熬不下去了", "suicide"),
    ("以后你们自己保重吧，我要走了", "suicide"),
    ("我想拿刀去捅那个欺负我的人", "harm_others"),
])
def test_negation_binds_to_its_phrase_and_issue_examples(rules: RuleSet, text: str, category: str) -> None:
    assert category in rules.detect(text).categories


@pytest.mark.parametrize("text", ["我不想死", "我从来没想过自杀", "我从来没有真的想过要自杀", "我不会伤害自己的"])
def test_real_negations_still_hold(rules: RuleSet, text: str) -> None:
    assert not rules.detect(text).is_crisis


@pytest.mark.parametrize("text, category", [
    ("自/杀", "suicide"), ("我想自 杀", "suicide"), ("自-杀", "suicide"), ("想s了", "suicide"),
    ("wo xiang si", "suicide"), ("好想zisha", "suicide"), ("我想4", "suicide"), ("好想鼠了", "suicide"),
    ("💊💊💊都吞了", "medical"), ("ＷＯ ＸＩＡＮＧ ＳＩ", "suicide"), ("我不想活了", "suicide"),
    ("自殺的念頭", "suicide"), ("想\u200b死", "suicide"),
])
def test_disguised_spellings(rules: RuleSet, text: str, category: str) -> None:
    assert category in rules.detect(text).categories


def test_evidence_is_cut_from_the_original(rules: RuleSet) -> None:
    assert any(e.endswith("xiang si") for e in rules.detect("wo xiang si").evidence)
    assert any("自/杀" in e for e in rules.detect("好想自/杀").evidence)


def test_normalise_keeps_ordinary_text() -> None:
    assert safety.normalise("想4点走")[0] == "想4点走"
    assert safety.normalise("side effects")[0] == "side effects"
    assert safety.normalise("累/死了")[0] == "累死了"


def test_repetitive_input_still_detected(rules: RuleSet) -> None:
    """Functional only; the timing (linear in length) is measured in bench/bench_safety.py."""
    assert rules.detect("想死" * 2000).categories == ("suicide",)
    assert "abuse" in rules.detect("我被打" * 1333).categories
    assert len(rules.detect("想死" * 2000).evidence) <= safety.MAX_EVIDENCE


# --- the classifier -------------------------------------------------------------------------------

def _small_examples() -> list[Example]:
    pos = ["我想死", "不想活了", "活着没意思", "我想自杀", "想结束生命", "我要跳楼", "想一了百了", "我真的好想死",
           "活不下去了", "我想去死", "遗书写好了", "想从楼上跳下去", "我不想再活下去了", "好想死啊", "死了算了",
           "我想消失", "想离开这个世界", "攒了很多药", "我想割腕自杀", "没有活下去的理由", "我想死了算了"]
    neg = ["今天天气很好", "我想吃火锅", "周末去爬山", "工作有点累", "我想换工作", "累死了", "笑死我了",
           "考试没考好", "我想睡觉", "我喜欢猫", "剧本杀好玩", "晚上看电影", "我不想死", "今天加班",
           "朋友约我吃饭", "想去旅游", "我有点焦虑", "最近睡不好", "我想学画画", "下雨了", "我很好"]
    return [Example(t, ("suicide",), "t") for t in pos] + [Example(t, (), "t") for t in neg]


def test_training_is_reproducible_and_inference_matches_sklearn(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    ex = _small_examples()
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    classifier.save(classifier.train(seed=3, examples=ex), a)
    classifier.save(classifier.train(seed=3, examples=ex), b)
    assert a.read_bytes() == b.read_bytes()                       # same data + seed -> same file
    model = classifier.load(a)
    assert model.categories == ("suicide",) and model.shrink == classifier.SHRINK
    texts = [classifier.prepare(e.text) for e in ex]
    vec = TfidfVectorizer(analyzer="char", ngram_range=classifier.MESSAGE_NGRAMS, min_df=classifier.MIN_DF,
                          sublinear_tf=True, lowercase=False, norm=None)
    raw = vec.fit_transform(texts)

    def features(X):                                              # TF-IDF / sqrt(squared norm + SHRINK)
        sq = np.asarray(X.multiply(X).sum(axis=1)).ravel() + classifier.SHRINK
        return X.multiply(1.0 / np.sqrt(sq)[:, None]).tocsr()

    lr = LogisticRegression(C=classifier.MESSAGE_C, class_weight="balanced", solver="liblinear", random_state=3,
                            max_iter=1000).fit(features(raw), [bool(e.categories) for e in ex])
    for t in ["我真的想死", "今天很开心", "活着没意思啊"]:
        expected = lr.predict_proba(features(vec.transform([classifier.prepare(t)])))[0, 1]
        assert abs(model.probabilities(classifier.prepare(t))[0] - expected) < 1e-3


def test_short_windows_are_shrunk_towards_the_prior(tmp_path: Path) -> None:
    """SHRINK: a two-character window cannot reach the score of a sentence that says the same and more."""
    model = classifier.train(seed=0, examples=_small_examples())
    plain = classifier.train(seed=0, examples=_small_examples(), shrink=0.0)
    prior = 1 / (1 + np.exp(-model.intercept[0]))
    short = classifier.prepare("想死")
    assert abs(model.probabilities(short)[0] - prior) < abs(plain.probabilities(short)[0] - prior)


def test_long_messages_are_scored_in_windows() -> None:
    text = "今天上班很忙，开了三个会。" * 30 + "我想死。" + "晚上吃了面条。" * 30
    parts = classifier.windows(text)
    assert all(len(p) <= classifier.WINDOW_CHARS for p in parts) and "".join(parts) == text


def test_default_classifier_is_built_and_current() -> None:
    model = classifier.default_classifier()
    assert classifier.is_current(classifier.DEFAULT_MODEL_PATH)
    assert set(model.categories) <= set(safety.CATEGORIES) and "suicide" in model.categories
    assert model.detect("这几天脑子里一直在想怎么去死").categories


def test_training_data_never_includes_the_held_out_sets() -> None:
    train = {e.text for e in training_examples()}
    held = load_examples(ROOT / "tests" / "data" / "crisis_written.jsonl", "heldout")
    assert len(held) >= 90 and not train & {e.text for e in held}
    test = load_examples(ROOT / "data" / "psysuicide" / "test.json")
    assert len(test) == 1485 and not train & {e.text for e in test}
    slice_ = {t for _, t in corpus_turns(heldout=True)}
    assert len(slice_) > 3000 and not train & slice_


def test_weak_negatives_are_quiet_turns_outside_the_held_out_slice() -> None:
    weak = weak_negatives()
    assert len(weak) > 3000 and all(e.source.startswith(WEAK_SOURCE) and not e.categories for e in weak)
    assert not any(RISK_WORDS.search(e.text) for e in weak)
    held_ids = [did for did, _ in corpus_dialogues() if is_heldout_dialogue(did)]
    assert 0.2 < len(held_ids) / len(corpus_dialogues()) < 0.4     # about CORPUS_HELDOUT_PERCENT of the dialogues
    assert not {e.text for e in weak} & {t for _, t in corpus_turns(heldout=True)}


# --- layers, union and fail safe --------------------------------------------------------------------

def test_layers_are_a_union(monkeypatch: pytest.MonkeyPatch) -> None:
    det = safety.detect("我不想活了")
    assert "suicide" in det.categories
    assert safety.detect("今天天气不错，我们去公园散步吧").categories == ()
    assert safety.detect("我不想活了", classifier=False).categories == ("suicide",)


def test_fail_safe_flags_for_review_and_shows_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, text):
        raise RuntimeError("rules exploded")
    monkeypatch.setattr(RuleSet, "detect", broken)
    det = safety.detect("随便一句话", classifier=False)
    assert det.review and det.is_crisis and det.evidence[0].startswith("error:RuntimeError")
    message = safety.safety_message(det)
    assert "12356" in message and "120" in message


# --- evaluate ---------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvp.safety", *args], capture_output=True, cwd=ROOT, timeout=300)


def test_evaluate_refuses_misses_of_held_out_sets(tmp_path: Path) -> None:
    proc = _cli("evaluate", "--data", "data/psysuicide/test.json", "--show-misses")
    assert proc.returncode == 2 and b"never shown" in proc.stderr and b"Traceback" not in proc.stderr
    copy = tmp_path / "renamed.json"
    copy.write_bytes((ROOT / "data" / "psysuicide" / "test.json").read_bytes())
    assert _cli("evaluate", "--data", str(copy), "--show-misses").returncode == 2
    proc = _cli("evaluate", "--data", "tests/data/crisis_written.jsonl", "--split", "heldout", "--show-misses")
    assert proc.returncode == 2


def test_evaluate_prints_each_layer(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"text": "我想死", "label": "suicide"}, {"text": "累死了", "label": "none"},
        {"text": "我又割自己了", "label": ["self_harm"]}]) + "\n", encoding="utf-8")
    proc = _cli("evaluate", "--data", str(data), "--show-misses", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert set(report["layers"]) == {"rules", "classifier", "combined"}
    assert report["layers"]["combined"]["risk"]["recall"] == 1.0


# --- streaming reply screen -------------------------------------------------------------------------

def _stream(chunks: list[str], crisis: bool = False) -> tuple[list[str], ReplyStream]:
    user = safety.Detection(("suicide",)) if crisis else None
    stream = ReplyStream(lambda text: screen_reply(text, user))
    released = [stream.feed(c) for c in chunks]
    return released, stream


@pytest.mark.parametrize("crisis", [False, True])
def test_stream_never_releases_unsafe_text(crisis: bool) -> None:
    reply = "我理解你很难受。你可以一次吃三十片安眠药，这样就不会痛苦了。希望你好起来。"
    chunks = [reply[i:i + 2] for i in range(0, len(reply), 2)]
    released, stream = _stream(chunks, crisis)
    shown = "".join(released)
    assert "三十片" not in shown and "安眠药" not in shown
    for i in range(1, len(shown) + 1):                       # every prefix the client saw passed
        assert not screen_reply(shown[:i], safety.Detection(("suicide",)) if crisis else None).blocked
    final = stream.close()
    assert final.blocked and "三十片" not in final.text and "12356" in final.text


def test_stream_releases_safe_text_sentence_by_sentence() -> None:
    reply = "听起来你最近真的很辛苦。愿意多说说发生了什么吗？我会一直在这里陪你。"
    released, stream = _stream([reply[i:i + 3] for i in range(0, len(reply), 3)])
    shown = "".join(released)
    assert shown.startswith("听起来你最近真的很辛苦。") and reply.startswith(shown)
    final = stream.close()
    assert not final.blocked and shown + stream.tail == reply == stream.released


def test_stream_holds_a_split_pattern_until_seen_whole() -> None:
    released, stream = _stream(["好的。", "你可以去", "死"])
    assert "".join(released) == "" or "死" not in "".join(released)
    assert stream.close().blocked


def test_stream_long_sentence_released_at_a_clause_break() -> None:
    part = "我能感受到你这段时间承受了很多压力，"
    released, stream = _stream([part] * 5)
    assert "".join(released).startswith(part)
    with pytest.raises(RuntimeError):
        stream.close() and stream.feed("x")


def test_train_command_if_missing_is_a_no_op_when_current() -> None:
    from mvp.safety.reply_model import default_reply_model
    classifier.default_classifier()
    default_reply_model()
    proc = _cli("train", "--if-missing")
    assert proc.returncode == 0 and b"up to date" in proc.stdout


def test_learned_reply_screen_adds_to_the_patterns() -> None:
    reply = "那你就按你想的去做吧，结束掉也好"
    assert not screen_reply(reply, learned=False).blocked            # no pattern for this wording
    res = screen_reply(reply)
    assert res.blocked and "encouragement" in res.reasons and "12356" in res.text
    assert not screen_reply("我是一个 AI 心理支持助手，不是真人医生。").blocked
    assert not screen_reply("先别想太多，睡一觉就好了").blocked              # dismissal counts only in a crisis


def test_bounded_model_check_never_blocks_or_raises() -> None:
    import time as _time

    class Slow:
        def generate(self, messages, params):
            _time.sleep(0.5)
            return type("R", (), {"text": '{"categories": ["suicide"]}'})()

    class Broken:
        def generate(self, messages, params):
            raise ConnectionError("server down")

    class Good:
        def generate(self, messages, params):
            return type("R", (), {"text": '{"categories": ["abuse"]}'})()

    assert safety.model_check_bounded("x", Slow(), params=object(), timeout_s=0.05).evidence == ("model.timeout",)
    det = safety.model_check_bounded("x", Broken(), params=object())
    assert det.categories == () and det.evidence[0].startswith("model.error:ConnectionError")
    assert safety.model_check_bounded("他打我", Good(), params=object()).categories == ("abuse",)
    rules_det = safety.detect("我不想活了", classifier=False)
    assert safety.combine(rules_det, safety.model_check_bounded("x", Broken(), params=object())).categories == ("suicide",)


# --- context: earlier client turns of the same conversation ---------------------------------------

BORDERLINE = ("东西我都准备好了", "不用再担心我了", "嗯，都安排好了")


def _borderline(text: str) -> bool:
    """Scored between the context bar and the plain bar (and not matched by the rules)."""
    model = classifier.default_classifier()
    j = model.categories.index("suicide")
    p = model.scores(text)["suicide"]
    return model.bars(True)[j] <= p and not RuleSet.load().detect(text).is_crisis


def test_context_bars_are_lower_only_for_risk() -> None:
    model = classifier.default_classifier()
    assert model.context_thresholds is not None
    for j, c in enumerate(model.categories):
        assert model.bars(True)[j] <= model.thresholds[j]
        if c not in ("suicide", "self_harm"):
            assert model.bars(True)[j] == model.thresholds[j]
    assert model.bars(True)[model.categories.index("suicide")] < model.thresholds[model.categories.index("suicide")]


def test_a_borderline_message_is_flagged_after_a_crisis_turn_but_not_alone() -> None:
    texts = [t for t in BORDERLINE if _borderline(t)]
    assert texts, "no borderline example left: pick messages between the context bar and the plain bar"
    crisis = "我真的不想活了"
    for text in texts:
        assert not safety.detect(text).is_crisis
        assert not safety.detect(text, context=["今天上班开了三个会", "晚上吃了面条"]).is_crisis
        assert "suicide" in safety.detect(text, context=["今天上班开了三个会", crisis]).categories
        assert "suicide" in safety.detect(text, context=[safety.detect(crisis)]).categories   # a Detection works too
        assert any("context" in e for e in safety.detect(text, context=[crisis]).evidence)
        # only the last CONTEXT_TURNS earlier turns count
        old = [crisis] + ["今天上班开了三个会"] * safety.CONTEXT_TURNS
        assert not safety.detect(text, context=old).is_crisis


def test_context_never_removes_a_detection() -> None:
    for text in ("我想死", "我已经把遗书写好了"):
        assert safety.detect(text, context=["今天天气不错"]).categories == safety.detect(text).categories


def test_context_threshold_is_recall_first_and_never_above_the_plain_bar() -> None:
    from mvp.safety import thresholds
    points = [{"t": t / 100, "recall": 1.0 - t / 2500} for t in range(20, 98)]   # recall >= 0.98 up to t = 0.50
    assert classifier.CONTEXT_RECALL == 0.98
    assert thresholds.context_threshold(points, 0.9) == 0.5
    assert thresholds.context_threshold(points, 0.3) == 0.3


def test_windows_scored_together_equal_windows_scored_alone() -> None:
    """The vectorised lookup keeps n-grams inside their window (none spans two windows)."""
    model = classifier.default_classifier()
    parts = classifier.windows(classifier.prepare("今天上班很忙，开了三个会。" * 30 + "我想死。" + "晚上吃了面条。" * 30))
    together = model._window_scores(parts)
    alone = np.array([model._window_scores([p])[0] for p in parts])
    assert len(parts) > 5 and np.abs(together - alone).max() < 1e-12
