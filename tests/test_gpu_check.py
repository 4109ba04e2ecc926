"""bench/gpu_check.py without a GPU: the Qwen2.5-7B shape, --help, the refusal on a machine without
CUDA, and the whole measuring code path (--dry-run: a tiny model on the CPU, NF4 included)."""

from __future__ import annotations

import json

import pytest

from bench import gpu_check


def test_shape_is_qwen25_7b_instruct():
    config = gpu_check.make_config(gpu_check.QWEN25_7B_INSTRUCT)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (3584, 18944, 28)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (28, 4, 152064)
    assert config.rope_parameters["rope_theta"] == 1e6 and config.max_position_embeddings == 32768
    assert config.tie_word_embeddings is False
    # Qwen2.5-7B-Instruct has 7.62 B parameters (model card: 7.61 B)
    assert 7.60e9 < gpu_check.count_parameters(gpu_check.QWEN25_7B_INSTRUCT) < 7.63e9


def test_parameter_count_matches_a_built_model():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(gpu_check.make_config(gpu_check.TINY))
    assert sum(p.numel() for p in model.parameters()) == gpu_check.count_parameters(gpu_check.TINY)


def test_help_runs_without_a_gpu(capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.main(["--help"])
    assert info.value.code == 0
    assert "--dry-run" in capsys.readouterr().out


def test_refuses_clearly_without_cuda(monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_dry_run_measures_everything(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["skipped"] == []
    rows = {r["measure"]: r for r in report["table"]}
    assert len(rows) == 11
    for row in report["table"]:
        assert isinstance(row["nf4"], float) and row["nf4"] >= 0, row
    assert sum(isinstance(r["bf16"], float) for r in report["table"]) == 9  # all but the two QLoRA rows
    dpo = report["phases"]["dpo"]
    assert dpo["trainable_parameters"] > 0 and dpo["loss"][0] == pytest.approx(0.6931, abs=1e-3)  # log 2 at step 1
    assert dpo["loss"][1] != dpo["loss"][0]  # the adapter learned
    assert "4-bit NF4" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # the temporary checkpoint is gone
