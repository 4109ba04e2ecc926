"""Training stages (pt, sft, rm, dpo with dpo/kto/orpo, rl with rloo/grpo) and the evaluation, on the
tiny model, a few steps each.

Every stage run is checked the way TRL's own trainer tests do it: the parameters are snapshotted when
training begins, and when it ends every trainable (LoRA / score head) parameter has changed and every
other parameter (the base, TRL's frozen "ref" adapter) has not. Then the saved adapter is loaded back
through the app's loader and generates. Data comes from small JSONL files written here, in the layout
of an export folder (trl/*.jsonl + manifest.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from train import config, data, outputs, training

SYSTEM = {"role": "system", "content": "你是一名温和、专业的心理咨询师。"}
N_TRAIN, N_EVAL = 8, 3


def _write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A small export folder: SFT conversations, DPO pairs and KTO rows from the bundled dialogues."""
    from train.demo.tiny_lm import iter_dialogues

    root = tmp_path_factory.mktemp("export")
    dialogues = [d for d in iter_dialogues() if len(d["messages"]) >= 4][:N_TRAIN + N_EVAL]
    sft, dpo, kto = [], [], []
    for d in dialogues:
        m = [{"role": x["role"], "content": x["content"][:80]} for x in d["messages"][:4]]
        sft.append({"messages": [SYSTEM] + m})
        pair = {"prompt": [SYSTEM, m[0]], "chosen": [m[1]], "rejected": [{"role": "assistant", "content": "不知道。"}]}
        dpo.append(pair)
        kto.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        kto.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    for kind, rows, per in (("sft", sft, 1), ("dpo", dpo, 1), ("kto", kto, 2)):
        _write_jsonl(root / "trl" / f"{kind}_train.jsonl", rows[:N_TRAIN * per])
        _write_jsonl(root / "trl" / f"{kind}_eval.jsonl", rows[N_TRAIN * per:])
    (root / "manifest.json").write_text(json.dumps({"name": "test-export", "counts": {"dpo": len(dpo)}}))
    return root


class Snapshot:
    """A TrainerCallback: parameters at train begin vs train end (see the module docstring)."""

    def __init__(self):
        from transformers import TrainerCallback

        snap = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                snap.before = {n: p.detach().clone() for n, p in model.named_parameters()}
                snap.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

            def on_train_end(self, args, state, control, model=None, **kwargs):
                snap.after = {n: p.detach().clone() for n, p in model.named_parameters()}

        self.callback = _Callback()
        self.before = self.after = None
        self.trainable: set[str] = set()

    def check(self):
        import torch

        assert self.before and self.after, "training did not run"
        assert self.trainable, "nothing was trainable"
        unchanged = [n for n in self.trainable if torch.equal(self.before[n], self.after[n])]
        assert not unchanged, f"trainable parameters did not change: {unchanged[:5]}"
        frozen = [n for n in self.before if n not in self.trainable]
        assert frozen, "no frozen (base) parameters: LoRA was not used"
        moved = [n for n in frozen if not torch.equal(self.before[n], self.after[n])]
        assert not moved, f"base / frozen parameters changed: {moved[:5]}"
        assert all("lora_" in n or "modules_to_save" in n for n in self.trainable), sorted(self.trainable)[:5]


@pytest.fixture
def snapshot(monkeypatch):
    snap = Snapshot()
    original = training.stage_callbacks
    monkeypatch.setattr(training, "stage_callbacks", lambda args, stage: original(args, stage) + [snap.callback])
    return snap


def tiny_args(tiny_model_dir, out: Path, **extra) -> dict:
    return {"model": str(tiny_model_dir), "quantization": "none", "device": "cpu", "output_dir": str(out),
            "max_steps": 3, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1,
            "learning_rate": 1e-2, **extra}


def generates(tiny_model_dir, adapter: Path) -> str:
    """The adapter loads back through the app's loader and the engine answers with it."""
    from mvp.model.engine import Engine, GenerationParams
    from mvp.model.loader import ModelSpec, load_model

    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), quantization="none"))
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"
    reply = Engine(loaded).generate([SYSTEM, {"role": "user", "content": "我最近压力很大。"}],
                                    GenerationParams(temperature=0, max_new_tokens=6))
    assert reply.new_tokens > 0
    return reply.text


def check_output(out: Path, stage: str) -> dict:
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
                 outputs.TRAIN_CONFIG_FILE, outputs.DONE_FILE):
        assert (out / name).is_file(), name
    assert not (out / "ref").exists(), "TRL's frozen reference adapter must not be saved"
    info = json.loads((out / outputs.TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    assert info["stage"] == stage
    assert info["resolved"]["device"] == "cpu"
    assert info["metrics"]["global_step"] >= 1
    return info


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_model_dir, export_dir) -> Path:
    """An SFT adapter for the stages that continue one (trained without the snapshot check)."""
    from train.sft import SFTStageConfig, run

    out = tmp_path_factory.mktemp("sft-shared") / "sft"
    run(SFTStageConfig(**tiny_args(tiny_model_dir, out, data=str(export_dir), max_steps=2)))
    return out


@pytest.fixture(scope="module")
def rm_adapter(tmp_path_factory, tiny_model_dir, export_dir) -> Path:
    from train.rm import RMStageConfig, run

    out = tmp_path_factory.mktemp("rm-shared") / "rm"
    run(RMStageConfig(**tiny_args(tiny_model_dir, out, data=str(export_dir), max_steps=2)))
    return out


# ---------------------------------------------------------------------------------------------
# Each stage trains LoRA only, saves, and loads back


def test_sft_trains_lora_only_and_serves(tmp_path, tiny_model_dir, export_dir, snapshot):
    from train.sft import SFTStageConfig, run

    out = run(SFTStageConfig(**tiny_args(tiny_model_dir, tmp_path / "sft", data=str(export_dir))))
    snapshot.check()
    info = check_output(out, "sft")
    assert info["data"]["assistant_only_loss"] is True  # the tiny template has {% generation %}
    assert info["data"]["train"]["rows_used"] == N_TRAIN
    assert info["data"]["eval"]["rows_used"] == N_EVAL and "eval_loss" in info["metrics"]
    assert json.loads((out / outputs.DATA_MANIFEST_FILE).read_text())["name"] == "test-export"
    assert info["config"]["learning_rate"] == 1e-2
    generates(tiny_model_dir, out)


def test_pt_trains_on_plain_text(tmp_path, tiny_model_dir, snapshot):
    from train.pt import PTStageConfig, run

    text = tmp_path / "texts"
    text.mkdir()
    (text / "a.txt").write_text("来访者说最近睡不好。\n\n咨询师请他描述一天的作息。\n\n短\n", encoding="utf-8")
    _write_jsonl(text / "b.jsonl", [{"text": "焦虑是一种常见的情绪反应，适度的焦虑有助于应对挑战。" * 20},
                                    {"messages": [{"role": "user", "content": "我很难过。"},
                                                  {"role": "assistant", "content": "愿意说说发生了什么吗？"}]}])
    out = run(PTStageConfig(**tiny_args(tiny_model_dir, tmp_path / "pt", data=str(text), max_length=64,
                                        min_chars=4)))
    snapshot.check()
    info = check_output(out, "pt")
    assert info["data"]["documents"] == 5 and info["data"]["too_short"] == 1
    assert info["data"]["windows"] > 4  # the long document was cut into several windows, not truncated
    generates(tiny_model_dir, out)


def test_rm_trains_score_head_and_lora(tmp_path, tiny_model_dir, export_dir, snapshot):
    import torch

    from mvp.model.loader import ModelSpec, load_model
    from train.rm import RMStageConfig, run

    out = run(RMStageConfig(**tiny_args(tiny_model_dir, tmp_path / "rm", data=str(export_dir))))
    snapshot.check()
    assert any("score" in n for n in snapshot.trainable)
    info = check_output(out, "rm")
    assert info["model_class"] == "seq_cls"
    rm = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(out), quantization="none"),
                    model_class="seq_cls")
    enc = rm.tokenizer("你好", return_tensors="pt")
    with torch.inference_mode():
        score = float(rm.model(**enc).logits[0, 0])
    assert math.isfinite(score)
    trained = [v for n, v in snapshot.after.items() if "score" in n and "modules_to_save" in n][0]
    loaded = [p for n, p in rm.model.named_parameters() if "score" in n and "modules_to_save" in n][0]
    assert torch.equal(trained, loaded.detach())  # the trained head is what comes back


@pytest.mark.parametrize("loss", ["dpo", "kto", "orpo"])
def test_preference_losses_continue_the_sft_adapter(tmp_path, tiny_model_dir, export_dir, sft_adapter,
                                                     snapshot, loss):
    from train.dpo import DPOStageConfig, run

    out = run(DPOStageConfig(**tiny_args(tiny_model_dir, tmp_path / loss, data=str(export_dir),
                                         adapter=str(sft_adapter), loss=loss)))
    snapshot.check()  # includes: TRL's "ref" copy of the SFT adapter stayed frozen
    if loss in ("dpo", "kto"):
        assert any(".ref." in n for n in snapshot.before), "reference should be a frozen copy of the SFT adapter"
    info = check_output(out, f"dpo:{loss}")
    assert info["data"]["kind"] == ("kto" if loss == "kto" else "dpo")
    assert info["resolved"]["continued_adapter"] == str(sft_adapter)
    generates(tiny_model_dir, out)


@pytest.mark.parametrize("algorithm, safety_penalty", [("rloo", 0.0), ("grpo", 1.0)])
def test_rl_against_the_reward_model(tmp_path, tiny_model_dir, export_dir, sft_adapter, rm_adapter,
                                     snapshot, algorithm, safety_penalty):
    from train.rl import RLStageConfig, run

    if safety_penalty:
        pytest.importorskip("mvp.safety")
    out = run(RLStageConfig(**tiny_args(
        tiny_model_dir, tmp_path / algorithm, data=str(export_dir), adapter=str(sft_adapter),
        reward_model=str(rm_adapter), algorithm=algorithm, num_generations=2, max_completion_length=8,
        max_samples=4, safety_penalty=safety_penalty)))
    snapshot.check()
    info = check_output(out, f"rl:{algorithm}")
    assert info["data"]["prompts"]["distinct_prompts"] == 4
    assert "last_reward" in info["metrics"]
    assert info["safety_penalty"] == safety_penalty
    generates(tiny_model_dir, out)


def test_qlora_path_on_a_4bit_base(tmp_path, tiny_model_dir, export_dir, snapshot):
    """4-bit base + LoRA (QLoRA): bitsandbytes runs 4-bit on the CPU, so the path is tested without a GPU."""
    from train.sft import SFTStageConfig, run

    out = run(SFTStageConfig(**tiny_args(tiny_model_dir, tmp_path / "q", data=str(export_dir),
                                         quantization="4bit", max_steps=2)))
    snapshot.check()
    assert check_output(out, "sft")["resolved"]["quantization"] == "4bit"


@pytest.mark.gpu
def test_qlora_on_cuda(tmp_path, tiny_model_dir, export_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from train.dpo import DPOStageConfig
    from train.dpo import run as run_dpo
    from train.sft import SFTStageConfig, run

    common_args = {"model": str(tiny_model_dir), "quantization": "auto", "device": "auto", "max_steps": 2,
                   "max_length": 256, "per_device_train_batch_size": 2, "data": str(export_dir)}
    sft = run(SFTStageConfig(**common_args, output_dir=str(tmp_path / "sft")))
    info = json.loads((sft / outputs.TRAIN_CONFIG_FILE).read_text())
    assert info["resolved"] == {**info["resolved"], "device": "cuda", "quantization": "4bit"}
    out = run_dpo(DPOStageConfig(**common_args, adapter=str(sft), output_dir=str(tmp_path / "dpo")))
    assert (out / "adapter_model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Evaluation


def test_evaluate_compares_new_and_parent(tmp_path, tiny_model_dir, export_dir, sft_adapter, rm_adapter, capsys):
    from train.evaluate import main

    out = tmp_path / "eval.json"
    assert main(["--base", str(tiny_model_dir), "--adapter", str(sft_adapter), "--data", str(export_dir),
                 "--reward-model", str(rm_adapter), "--out", str(out), "--quantization", "none",
                 "--device", "cpu", "--max-new-tokens", "4", "--max-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "困惑度" in printed and "奖励模型得分" in printed
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["data_info"]["sft_used"] == 2 and result["data_info"]["pairs_used"] == 2
    for side in ("new", "parent"):
        assert result[side]["perplexity"] > 1
        assert result[side]["preference_accuracy"] in (0.0, 0.5, 1.0)
        assert math.isfinite(result[side]["reward_score"])
    assert result["implicit_preference_accuracy"] in (0.0, 0.5, 1.0)
    # the parent is the bare base here: its implicit reward against itself would be exactly 0
    assert result["parent_adapter"] is None


def test_assistant_spans_cover_exactly_the_replies(tiny_loaded):
    from train.evaluate import assistant_spans

    tok = tiny_loaded.tokenizer
    messages = [SYSTEM, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好，请坐。"},
                {"role": "user", "content": "我睡不着"}, {"role": "assistant", "content": "多久了？"}]
    ids, spans = assistant_spans(tok, messages)
    assert len(spans) == 2
    texts = [tok.decode(ids[a:b]) for a, b in spans]
    assert texts == ["你好，请坐。<|im_end|>\n", "多久了？<|im_end|>\n"] or \
        texts == ["你好，请坐。<|im_end|>", "多久了？<|im_end|>"]


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, counted skips, never a silent drop


def test_config_typo_in_yaml_names_the_key(tmp_path):
    from train.sft import SFTStageConfig

    path = tmp_path / "c.yaml"
    path.write_text("model: demo\noutput_dir: x\nlearning_rat: 0.1\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="learning_rat.*learning_rate"):
        config.parse_config(SFTStageConfig, ["--config", str(path)], prog="t", description="t")


def test_config_typo_on_the_command_line_names_the_flag(capsys):
    from train.dpo import main

    assert main(["--output-dir", "x", "--data", "x", "--max-step", "3"]) == 2
    err = capsys.readouterr().err
    assert "--max-step" in err and "max_steps" in err


def test_flags_override_yaml_and_values_are_typed(tmp_path):
    from train.dpo import DPOStageConfig

    path = tmp_path / "c.yaml"
    path.write_text("output_dir: x\nlearning_rate: 1e-4\nloss: kto\nlora_target_modules: [q_proj]\n",
                    encoding="utf-8")
    cfg = config.parse_config(DPOStageConfig, ["--config", str(path), "--loss", "orpo", "--max-steps", "5",
                                               "--eval-at-end", "false", "--lora-target-modules", "q_proj,v_proj",
                                               "--trl-args", '{"optim": "adamw_torch"}'],
                              prog="t", description="t")
    assert (cfg.loss, cfg.max_steps, cfg.learning_rate, cfg.eval_at_end) == ("orpo", 5, 1e-4, False)
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.trl_args == {"optim": "adamw_torch"}


@pytest.mark.parametrize("values, key", [
    ({"max_steps": "many"}, "max_steps"),
    ({"loss": "ppo"}, "loss"),
    ({"quantization": "3bit"}, "quantization"),
    ({"bad_rows": "ignore"}, "bad_rows"),
    ({"loss": "kto", "per_device_train_batch_size": 1}, "per_device_train_batch_size"),
    ({"output_dir": ""}, "output_dir"),
])
def test_bad_values_name_the_key(values, key):
    from train.dpo import DPOStageConfig

    with pytest.raises(config.ConfigError, match=key):
        config.config_from_dict(DPOStageConfig, {"output_dir": "x", **values})


def test_unknown_trl_argument_is_refused(tmp_path):
    from trl import SFTConfig

    from train.sft import SFTStageConfig

    cfg = SFTStageConfig(output_dir=str(tmp_path), trl_args={"optimm": "adamw_torch"})
    with pytest.raises(config.ConfigError, match="optimm.*optim"):
        training.training_kwargs(cfg, "cpu", SFTConfig)


def test_rl_batch_must_hold_whole_groups():
    from train.rl import RLStageConfig

    with pytest.raises(config.ConfigError, match="num_generations"):
        RLStageConfig(output_dir="x", reward_model="rm", num_generations=3, per_device_train_batch_size=4)
    with pytest.raises(config.ConfigError, match="reward_model"):
        RLStageConfig(output_dir="x")


def test_empty_dataset_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    from train.sft import main

    empty = _write_jsonl(tmp_path / "empty.jsonl", [])
    assert main(["--model", str(tiny_model_dir), "--data", str(empty), "--output-dir", str(tmp_path / "o")]) == 2
    assert "数据集为空" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_export_without_the_stage_file_is_a_clear_error(tmp_path, capsys):
    from train.rm import main

    (tmp_path / "exp" / "trl").mkdir(parents=True)
    assert main(["--data", str(tmp_path / "exp"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "dpo_train.jsonl" in capsys.readouterr().err


BAD_ROWS = {
    "sft": [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            {"messages": [{"role": "user", "content": "a"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "system", "content": "late"}, {"role": "user", "content": "c"},
                          {"role": "assistant", "content": "d"}]}],
    "dpo": [{"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
             "chosen": [{"role": "assistant", "content": "x"}], "rejected": [{"role": "assistant", "content": "y"}]},
            {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
             "chosen": [{"role": "assistant", "content": "x"}], "rejected": [{"role": "assistant", "content": "y"}]},
            {"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "user", "content": "x"}],
             "rejected": [{"role": "assistant", "content": "y"}]}],
    "kto": [{"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant", "content": "x"}],
             "label": "true"},
            {"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant", "content": "x"}]}],
}


@pytest.mark.parametrize("kind", ["sft", "dpo", "kto"])
def test_bad_rows_are_refused_with_line_numbers_or_skipped_and_counted(tmp_path, export_dir, kind):
    good = [json.loads(line) for line in open(export_dir / "trl" / f"{kind}_train.jsonl", encoding="utf-8")][:2]
    bad = BAD_ROWS[kind]
    path = _write_jsonl(tmp_path / f"{kind}.jsonl", good + bad)
    with pytest.raises(config.DataError) as exc:
        data.load_rows(path, kind)
    message = str(exc.value)
    assert f"{len(bad)}/{len(good) + len(bad)}" in message and "第 3 行" in message and "--bad-rows skip" in message
    rows, report = data.load_rows(path, kind, bad_rows="skip")
    assert len(rows) == len(good)
    assert report.to_dict()["rows_skipped"] == len(bad) and report.rows_in == len(good) + len(bad)
    assert [b["line"] for b in report.bad_rows] == list(range(3, 3 + len(bad)))


def test_string_kto_label_is_refused_before_trl_sees_it(tmp_path):
    path = _write_jsonl(tmp_path / "k.jsonl", BAD_ROWS["kto"][:1])
    with pytest.raises(config.DataError, match="布尔"):
        data.load_rows(path, "kto")


def test_skipped_rows_are_recorded_with_the_adapter(tmp_path, tiny_model_dir, export_dir):
    from train.sft import SFTStageConfig, run

    good = [json.loads(line) for line in open(export_dir / "trl" / "sft_train.jsonl", encoding="utf-8")][:4]
    data = _write_jsonl(tmp_path / "mixed.jsonl", good + BAD_ROWS["sft"])
    out = run(SFTStageConfig(**tiny_args(tiny_model_dir, tmp_path / "o", data=str(data), bad_rows="skip",
                                         max_steps=1)))
    info = json.loads((out / outputs.TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    assert info["data"]["train"]["rows_in"] == 8
    assert info["data"]["train"]["rows_used"] == 4 and info["data"]["train"]["rows_skipped"] == 4


def test_invalid_json_line_is_a_clear_error(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", ['{"messages": []}', "{oops"])
    with pytest.raises(config.DataError, match="第 2 行"):
        data.load_rows(path, "sft")


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_lora_config_and_cpu_training_defaults(tmp_path):
    from train.sft import SFTStageConfig

    cfg = SFTStageConfig(output_dir=str(tmp_path), lora_r=4, lora_alpha=8)
    lora = training.lora_config(cfg, "SEQ_CLS")
    assert (lora.r, lora.lora_alpha, lora.task_type, lora.target_modules) == (4, 8, "SEQ_CLS", "all-linear")
    kwargs = training.training_kwargs(cfg, "cpu")
    assert kwargs["use_cpu"] is True and kwargs["bf16"] is False and kwargs["fp16"] is False
    assert kwargs["gradient_checkpointing"] is False and kwargs["save_strategy"] == "no"
    assert kwargs["report_to"] == "none"


@pytest.mark.parametrize("stage", ["pt", "sft", "rm", "dpo", "rl"])
def test_every_stage_has_help(stage, capsys):
    import importlib

    module = importlib.import_module(f"train.{stage}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--output-dir" in out and "--config" in out


def test_inputs_hash_follows_data_config_and_adapter(tmp_path, export_dir):
    from train.sft import SFTStageConfig, digest

    base = {"model": "x", "data": str(export_dir), "output_dir": str(tmp_path / "a")}
    first = digest(SFTStageConfig(**base))
    assert digest(SFTStageConfig(**{**base, "output_dir": str(tmp_path / "b")})) == first  # output_dir is not an input
    assert digest(SFTStageConfig(**{**base, "learning_rate": 1e-3})) != first
    other = tmp_path / "exp"
    (other / "trl").mkdir(parents=True)
    for name in ("sft_train.jsonl", "sft_eval.jsonl"):
        (other / "trl" / name).write_bytes((export_dir / "trl" / name).read_bytes())
    assert digest(SFTStageConfig(**{**base, "data": str(other)})) == first  # same bytes, same hash
    with open(other / "trl" / "sft_train.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "a"},
                                          {"role": "assistant", "content": "b"}]}) + "\n")
    assert digest(SFTStageConfig(**{**base, "data": str(other)})) != first


def test_assistant_only_loss_needs_a_marked_template(tiny_loaded):
    import copy

    from train.demo.tiny_lm import CHAT_TEMPLATE

    tok = copy.deepcopy(tiny_loaded.tokenizer)
    assert training.assistant_mask_supported(tok)[0]
    tok.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    supported, why = training.assistant_mask_supported(tok)
    assert not supported and "generation" in why


@pytest.mark.parametrize("name, stage", [("sft_qlora_7b.yaml", "sft"), ("dpo_qlora_7b.yaml", "dpo")])
def test_example_gpu_configs_parse(name, stage):
    import importlib

    module = importlib.import_module(f"train.{stage}")
    cls = {"sft": "SFTStageConfig", "dpo": "DPOStageConfig"}[stage]
    path = Path(__file__).resolve().parent.parent / "train" / "configs" / name
    cfg = config.parse_config(getattr(module, cls), ["--config", str(path)], prog="t", description="t")
    assert cfg.quantization == "auto" and cfg.model.startswith("Qwen/")


def test_safety_reward_penalises_blocked_replies():
    pytest.importorskip("mvp.safety")
    from train.rl import safety_reward

    reward = safety_reward()
    replies = [[{"role": "assistant", "content": "我是真人咨询师，不是AI。"}],
               [{"role": "assistant", "content": "听起来你最近很辛苦，愿意多说说吗？"}]]
    assert reward(prompts=[[], []], completions=replies) == [-1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# The stage registry and the one run skeleton


def test_stages_and_their_data_kinds_come_from_the_registry():
    import dataclasses

    from train import pipeline, registry
    from train.dpo import DPOStageConfig
    from train.rl import RLStageConfig

    stages = registry.stages()
    assert list(stages) == ["pt", "sft", "rm", "dpo", "rl"]  # STAGE_MODULES order
    assert list(pipeline.STAGES) == list(stages)  # the pipeline keeps no list of its own
    pipeline_fields = {f.name for f in dataclasses.fields(pipeline.PipelineConfig)}
    assert set(stages) <= pipeline_fields  # one YAML section per registered stage
    for name, stage in stages.items():
        assert stage.name == name and importlib_module(name).STAGE is stage
    assert [name for name, st in stages.items() if st.policy] == ["pt", "sft", "dpo", "rl"]
    assert [name for name, st in stages.items() if st.makes_reward_model] == ["rm"]
    assert [name for name, st in stages.items() if st.needs_reward_model] == ["rl"]
    kinds = {
        "pt": stages["pt"].data_kind(None),
        "sft": stages["sft"].data_kind(None),
        "rm": stages["rm"].data_kind(None),
        "dpo": stages["dpo"].data_kind(DPOStageConfig(output_dir="x")),
        "kto": stages["dpo"].data_kind(DPOStageConfig(output_dir="x", loss="kto")),
        "rl": stages["rl"].data_kind(RLStageConfig(output_dir="x", reward_model="rm", prompts_from="kto")),
    }
    assert kinds == {"pt": None, "sft": "sft", "rm": "dpo", "dpo": "dpo", "kto": "kto", "rl": "kto"}
    with pytest.raises(config.ConfigError, match="ppo.*pt, sft, rm, dpo, rl"):
        registry.get("ppo")


def importlib_module(name: str):
    import importlib

    return importlib.import_module(f"train.{name}")


def test_a_registered_stage_is_run_by_the_shared_skeleton(tmp_path, tiny_model_dir, export_dir, monkeypatch):
    """A new stage is a Stage subclass + registration: the skeleton loads, trains, saves and marks it done."""
    from dataclasses import dataclass

    from train import registry
    from train.sft import lm_trainer

    calls = []

    @dataclass
    class EchoConfig(config.StageConfig):
        pass

    class EchoStage(registry.Stage):
        name = "echo"
        config_cls = EchoConfig

        def data_kind(self, cfg):
            return "sft"

        def load_data(self, cfg):
            files = data.resolve_data(cfg.data, cfg.eval_data, "sft")
            rows, report = data.load_rows(files.train, "sft", keep=["messages"])
            calls.append("load_data")
            return registry.StageData(rows, [], {"train": report.to_dict()}, manifest=files.manifest,
                                      extra={"echo": True})

        def make_trainer(self, cfg, loaded, peft_config, stage_data, callbacks):
            calls.append("make_trainer")
            assert peft_config is not None and loaded.device == "cpu"
            assert any(type(c).__name__ == "WallClockStop" for c in callbacks)
            return lm_trainer(cfg, loaded, peft_config, stage_data, callbacks, plain_loss=True)

    monkeypatch.setattr(registry, "_REGISTERED", {})  # forgotten after the test
    registry.register(EchoStage())
    assert list(registry.stages())[-1] == "echo"
    stage = registry.get("echo")
    cfg = EchoConfig(**tiny_args(tiny_model_dir, tmp_path / "echo", data=str(export_dir), max_steps=1))
    out = stage.run(cfg)
    assert calls == ["load_data", "make_trainer"]
    info = check_output(out, "echo")
    assert info["echo"] is True and info["data"]["train"]["rows_used"] == N_TRAIN
    assert (out / outputs.DATA_MANIFEST_FILE).is_file()
    assert outputs.is_done(out, stage.digest(cfg))  # the pipeline would skip it on a rerun
    generates(tiny_model_dir, out)
