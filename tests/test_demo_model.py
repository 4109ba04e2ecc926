"""The built-in demo model (`train.demo.build`), built in its reduced `quick` form.

One quick build (fixed steps, so the assertions do not depend on the machine's speed) is shared by
the module; the determinism test makes two more, smaller ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from train.demo import build as dm  # noqa: E402
from train.demo import dialogues  # noqa: E402
from train.demo import tiny_lm  # noqa: E402

QUICK_STEPS = 150
# The quick build (150 steps, vocab 1000) reaches about 0.15x the untrained perplexity; 0.5x leaves room
# for other machines while still failing if training did nothing useful.
MAX_PPL_RATIO = 0.5
CHINESE = "我最近总是睡不着，心里很焦虑，不知道该怎么办。"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    dm.build_demo(out, budget_s=120, seed=0, max_steps=QUICK_STEPS, quick=True)
    return out


@pytest.fixture(scope="module")
def loaded(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    return model, tokenizer


def _info(path):
    return json.loads((path / "build_info.json").read_text(encoding="utf-8"))


def test_folder_is_complete_and_loads_offline(built, loaded):
    model, tokenizer = loaded
    assert dm.is_built(built)
    assert not list(built.parent.glob(".demo.*")), "a temporary folder was left behind"
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"  # what AutoTokenizer gives any qwen2 folder
    assert tokenizer.decode(tokenizer(CHINESE)["input_ids"]) == CHINESE
    assert model.config.model_type == "qwen2"
    gen = model.generation_config
    assert gen.repetition_penalty == pytest.approx(1.1)
    assert gen.temperature == pytest.approx(0.7) and gen.top_p == pytest.approx(0.9)
    assert gen.max_new_tokens == 128
    assert gen.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_reloaded_tokenizer_encodes_like_the_one_trained(built, loaded):
    _, reloaded = loaded
    trained = tiny_lm.train_tokenizer(
        tiny_lm.dialogue_texts(dialogues.training_dialogues()[: dm.QUICK.max_train_dialogues]), dm.QUICK.vocab_size
    )
    messages = [{"role": "system", "content": dialogues.GENERIC_SYSTEM_PROMPT}, {"role": "user", "content": CHINESE}]
    text = trained.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert reloaded(text)["input_ids"] == trained(text)["input_ids"]


def test_model_card_and_build_info(built):
    card = (built / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "NOT clinically meaningful" in card
    assert "CC BY 4.0" in card and "MIT" in card and "data/SOURCES.md" in card
    info = _info(built)
    assert info["complete"] is True and info["seed"] == 0 and info["quick"] is True
    assert info["steps"] == QUICK_STEPS and info["stopped_by"] == "max_steps"
    assert f"{QUICK_STEPS} steps" in card
    assert info["train_loss_last"] < info["train_loss_first"]
    assert {"torch", "transformers", "trl"} <= set(info["versions"])


def test_heldout_perplexity_far_below_untrained(built, loaded):
    info = _info(built)
    trained, untrained = info["eval_perplexity_trained"], info["eval_perplexity_untrained"]
    assert trained < MAX_PPL_RATIO * untrained, (trained, untrained)
    # The reloaded folder scores the same as the model did in memory.
    model, tokenizer = loaded
    evaluated = [d for d in dialogues.heldout_dialogues() if d["id"] in set(info["data"]["eval_dialogue_ids"])]
    ppl = dialogues.eval_perplexity(model, tokenizer, evaluated, max_length=info["settings"]["max_length"])
    assert ppl == pytest.approx(trained, rel=1e-3)


def test_no_heldout_dialogue_is_trained_on(built):
    heldout = {d["id"] for d in dialogues.heldout_dialogues()}
    train = {d["id"] for d in dialogues.training_dialogues()}
    everything = {d["id"] for d in tiny_lm.iter_dialogues()}
    assert heldout | train == everything and not heldout & train
    assert 0.03 < len(heldout) / len(everything) < 0.08
    data = _info(built)["data"]
    assert data["train_dialogue_ids"] and not set(data["train_dialogue_ids"]) & heldout
    assert set(data["eval_dialogue_ids"]) <= heldout


@pytest.mark.parametrize("message", [CHINESE, "我和父母的关系很紧张，每次说话都会吵起来。"])
def test_generation_stops_at_end_of_turn(loaded, message):
    import torch

    model, tokenizer = loaded
    messages = [{"role": "system", "content": dialogues.GENERIC_SYSTEM_PROMPT}, {"role": "user", "content": message}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**prompt)  # the saved defaults: sampling, repetition penalty, 128 new tokens
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in new and len(new) <= model.generation_config.max_new_tokens
    reply = tokenizer.decode(new[: new.index(end)])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in reply), reply


def test_same_seed_and_steps_give_identical_weights(tmp_path):
    from safetensors.torch import load_file

    small = dataclasses.replace(dm.QUICK, max_train_dialogues=40, max_eval_dialogues=2)
    paths = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        paths[name] = dm.build_demo(tmp_path / name, budget_s=60, seed=seed, max_steps=3, settings=small)
    a, b, c = (load_file(paths[n] / "model.safetensors") for n in "abc")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)  # the seed matters, so the equality above means something


def test_is_built_is_false_for_incomplete_folders(built, tmp_path):
    assert not dm.is_built(tmp_path / "missing")
    assert not dm.is_built(tmp_path)
    for remove in ("build_info.json", "model.safetensors", "tokenizer.json"):
        copy = tmp_path / f"without-{remove}"
        shutil.copytree(built, copy)
        (copy / remove).unlink()
        assert not dm.is_built(copy)
    copy = tmp_path / "unfinished"
    shutil.copytree(built, copy)
    info = _info(copy)
    info["complete"] = False
    (copy / "build_info.json").write_text(json.dumps(info), encoding="utf-8")
    assert not dm.is_built(copy)
    (copy / "build_info.json").write_text("{", encoding="utf-8")
    assert not dm.is_built(copy)


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(dm, "_make_trainer", broken)
    small = dataclasses.replace(dm.QUICK, max_train_dialogues=10, max_eval_dialogues=1)
    with pytest.raises(RuntimeError, match="killed"):
        dm.build_demo(tmp_path / "demo", budget_s=5, settings=small)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(dm.DemoBuildError, match="notes.txt"):
        dm.build_demo(tmp_path, quick=True)
    assert (tmp_path / "notes.txt").exists()


def test_windows_are_whole_turns_under_the_length_limit(loaded):
    _, tokenizer = loaded
    dialogue = dialogues.training_dialogues()[0]
    (whole,) = dialogues.encode_windows(tokenizer, [dialogue], max_length=100_000)
    messages = [{"role": "system", "content": dialogues.GENERIC_SYSTEM_PROMPT}, *dialogue["messages"]]
    assert whole["input_ids"] == tokenizer.apply_chat_template(messages, return_dict=False)
    scored = tokenizer.decode([t for t, m in zip(whole["input_ids"], whole["assistant_mask"]) if m])
    replies = [m["content"] + "<|im_end|>" for m in dialogue["messages"] if m["role"] == "assistant"]
    assert scored == "".join(replies)

    windows = dialogues.encode_windows(tokenizer, dialogues.training_dialogues()[:20], 128, dialogues.STAGE_SYSTEM_PROMPTS)
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for w in windows:
        ids = w["input_ids"]
        assert len(ids) <= 128
        assert tokenizer.decode(ids).startswith("<|im_start|>system\n")
        assert ids.count(start) == ids.count(end) >= 2  # the system prompt and at least one whole message


def test_cli_leaves_a_complete_build_alone(built, capsys):
    before = (built / "model.safetensors").stat().st_mtime_ns
    assert dm.main(["--out", str(built)]) == 0
    assert "already built" in capsys.readouterr().out
    assert (built / "model.safetensors").stat().st_mtime_ns == before
    assert dm.ensure_demo_model(built) == built


@pytest.mark.parametrize(("seconds_per_step", "expected"), [({2: 1.0, 1: 0.2}, 1), ({2: 0.1, 1: 0.2}, 2)])
def test_thread_tuner_keeps_the_faster_thread_count(seconds_per_step, expected):
    tuner = dm.ThreadTuner([2, 1], every_s=5.0, probe=3)
    now, used = 0.0, []
    for step in range(60):
        threads = tuner.threads_for_next_step(step, now)
        used.append(threads)
        now += seconds_per_step[threads]
        tuner.record(threads, seconds_per_step[threads], step)
    assert tuner.best == expected
    assert used[0] == 2
    assert used.count(3 - expected) < len(used) / 3  # the slower count only runs in probes
