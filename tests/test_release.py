"""The release gate (issue 16): a regressing adapter is refused and the app does not serve it as
primary; an unchanged one is promoted; --promote-anyway records who, why and when; old databases keep
their versions servable; the fixed benchmark never overlaps the demo model's training data.

Real parts throughout: the tiny Qwen2 model of conftest, peft adapters saved to disk, the one loader,
the benchmark on data/benchmark/, the store on a file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from mvp.store import Store, schema
from train import benchmark, benchmark_data, gate, release

BENCH = {"max_items": 6, "max_new_tokens": 6}


def _adapter(tiny_model_dir: Path, out: Path, noise: float) -> str:
    """A LoRA adapter on the tiny model: zero-initialised (``noise`` 0: the base, unchanged) or with
    its B matrices on the output head filled with noise, which makes the model confidently wrong:
    the gold counsellor replies of the fixed set become far less likely (noise in the inner layers
    would not do: the final norm rescales it, and the untrained base is near-uniform anyway)."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: lm_head is tied to the embeddings (fine for a test adapter)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "lm_head"]))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name and "lm_head" in name and noise:
                    param.normal_(0.0, noise)
        model.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("adapters")
    return {"same": _adapter(tiny_model_dir, root / "same", 0.0), "bad": _adapter(tiny_model_dir, root / "bad", 0.5)}


@pytest.fixture(scope="module")
def scores(adapters, tiny_model_dir):
    """Benchmark results of the base, the unchanged adapter and the noised one (6 items each)."""
    def score(adapter):
        return benchmark.run(benchmark.BenchmarkSettings(base=str(tiny_model_dir), adapter=adapter,
                                                         quantization="none", device="cpu", **BENCH))
    return {"base": score(None), "same": score(adapters["same"]), "bad": score(adapters["bad"])}


def test_the_gate_refuses_a_regressing_adapter_and_promotes_an_unchanged_one(scores):
    base, same, bad = scores["base"], scores["same"], scores["bad"]
    assert bad["summary"]["gold_perplexity"] > base["summary"]["gold_perplexity"]
    refused = gate.decide(bad["items"], base["items"])
    assert refused["decision"] == "refuse"
    nll = next(c for c in refused["checks"] if c["name"] == "gold_nll")
    assert nll["regressed"] and nll["ci"][0] > nll["margin"]
    assert any("困惑度" in r for r in refused["reasons"]) and "发布检查未通过" in refused["summary"]
    promoted = gate.decide(same["items"], base["items"])
    assert promoted["decision"] == "promote" and promoted["reasons"] == []
    assert all(not c["regressed"] for c in promoted["checks"])


def test_gate_rules_on_synthetic_items():
    n = 40
    parent = {"dialogue_ids": list(range(n)), "crisis_ids": list(range(20)), "gold_nll": [3.0] * n,
              "screen_pass": [1] * n, "crisis_pass": [1] * 20}
    noisy = {**parent, "gold_nll": [3.0 + (0.05 if i % 2 else -0.05) for i in range(n)]}  # noise around 0
    assert gate.decide(noisy, parent)["decision"] == "promote"
    one_miss = {**parent, "crisis_pass": [0] + [1] * 19}  # one item: within noise, above the floor
    assert gate.decide(one_miss, parent)["decision"] == "promote"
    below_floor = {**parent, "crisis_pass": [0, 0, 0] + [1] * 17}  # 85 % < the 90 % floor
    verdict = gate.decide(below_floor, parent)
    assert verdict["decision"] == "refuse" and any("下限" in r for r in verdict["reasons"])
    unsafe = {**parent, "screen_pass": [0] * 12 + [1] * (n - 12)}
    assert gate.decide(unsafe, parent)["decision"] == "refuse"
    with pytest.raises(ValueError, match="同一组"):
        gate.decide({**parent, "dialogue_ids": list(range(1, n + 1))}, parent)


def _cfg(tiny_model_dir, **gate_section):
    return SimpleNamespace(base_model=str(tiny_model_dir), quantization="none", device="cpu",
                           gate={**BENCH, **gate_section})


def test_a_refused_version_is_not_served_as_primary_and_not_offered_in_the_arena(tmp_path, adapters, tiny_model_dir,
                                                                                  scores):
    from mvp.app.service import EnginePool, Service, ServiceError
    from mvp.counsel.stages import load_stages
    from tests.test_service import ScriptedEngine

    store = Store(tmp_path / "feedback.db")
    store.add_user("admin", "password-admin-1", "admin")
    base = store.register_model_version(str(tiny_model_dir), quantization="none")
    bad = store.register_model_version(str(tiny_model_dir), adapter=adapters["bad"], quantization="none",
                                       parent_id=base, status="candidate")
    assert store.get_model_version(bad)["status"] == "candidate"
    with pytest.raises(ServiceError, match="候选"):
        Service(store, load_stages(), EnginePool(bad, ScriptedEngine("x")))
    record = release.release(store, bad, _cfg(tiny_model_dir), adapter=adapters["bad"], parent_adapter=None,
                             run_dir=tmp_path / "run")
    row = store.get_model_version(bad)
    assert record["status"] == row["status"] == "refused" and row["release"]["decision"] == "refuse"
    assert row["release"]["benchmark"]["new"]["gold_perplexity"] > row["release"]["benchmark"]["parent"]["gold_perplexity"]
    with pytest.raises(ServiceError, match="未通过发布检查") as refused:
        Service(store, load_stages(), EnginePool(bad, ScriptedEngine("x")))
    assert "困惑度" in str(refused.value) and "--promote-anyway" in str(refused.value)
    service = Service(store, load_stages(), EnginePool(base, ScriptedEngine("x"), loader=lambda v: ScriptedEngine("y")))
    conv = service.new_conversation("admin", "intake")["id"]
    store.add_user_message(conv, "最近总是睡不着")
    with pytest.raises(ServiceError, match="未通过发布检查"):  # asked for by id over the API
        service.compare("admin", conv, bad)
    shown = [v for v in service.versions("admin") if v["id"] == bad][0]
    from mvp.app.ui import render

    table = render.versions_frame([shown])
    assert table["发布状态"][0] == "未通过发布检查" and "困惑度" in table["发布检查"][0]
    # the benchmark results were cached: a second decision scores nothing again
    assert len(list((tmp_path / "run" / "benchmark").glob("*.json"))) == 2


def test_an_unchanged_adapter_is_promoted_and_promote_anyway_is_recorded(tmp_path, adapters, tiny_model_dir, scores):
    store = Store(tmp_path / "feedback.db")
    base = store.register_model_version(str(tiny_model_dir), quantization="none")
    same = store.register_model_version(str(tiny_model_dir), adapter=adapters["same"], quantization="none",
                                        parent_id=base, status="candidate")
    assert release.release(store, same, _cfg(tiny_model_dir), adapter=adapters["same"], parent_adapter=None,
                           run_dir=tmp_path / "run")["status"] == "servable"
    bad = store.register_model_version(str(tiny_model_dir), adapter=adapters["bad"], quantization="none",
                                       parent_id=base, status="candidate")
    record = release.release(store, bad, _cfg(tiny_model_dir), adapter=adapters["bad"], parent_adapter=None,
                             run_dir=tmp_path / "run", promote_anyway="临床团队要先在盲评里看它的回复")
    row = store.get_model_version(bad)
    assert row["status"] == "servable" and record["decision"] == "refuse"
    override = row["release"]["override"]
    assert override["reason"] == "临床团队要先在盲评里看它的回复" and override["by"] and override["at"]
    assert override["gate_decision"] == "refuse"
    audit = [a for a in store.list_audit() if a["action"] == "version_promoted_anyway"]
    assert audit and audit[0]["target"] == str(bad)
    # a rerun without the flag keeps the override of the same version
    again = release.release(store, bad, _cfg(tiny_model_dir), adapter=adapters["bad"], parent_adapter=None,
                            run_dir=tmp_path / "run")
    assert again["status"] == "servable" and again["override"]["reason"] == override["reason"]
    with pytest.raises(ValueError, match="理由"):
        gate.override(record, "  ", "me", "now")


def test_a_gate_section_typo_is_a_config_error():
    from train.config import ConfigError

    with pytest.raises(ConfigError, match="nll_marign"):
        release.check_section({"nll_marign": 0.1})
    with pytest.raises(ConfigError, match="max_items"):
        release.check_section({"max_items": 0})
    with pytest.raises(ConfigError, match="crisis_floor"):
        release.check_section({"crisis_floor": 1.5})


def test_old_database_keeps_its_versions_servable(tmp_path):
    path = tmp_path / "old.db"
    conn = schema.connect(str(path))
    release_migration = next(m.version for m in schema.MIGRATIONS if m.name.startswith("model_versions.status"))
    schema.migrate(conn, target=release_migration - 1)
    conn.execute("INSERT INTO model_versions (label, base_model, quantization, backend, created_at)"
                 " VALUES ('old', 'demo', 'none', 'inprocess', '2026-11-01T00:00:00.000+00:00')")
    conn.close()
    store = Store(path)
    (old,) = store.list_model_versions()
    assert old["status"] == "servable" and old["release"] is None
    assert store.register_model_version("demo", quantization="none") == old["id"]  # the app restarts on it
    new = store.register_model_version("demo", adapter="/x", quantization="none", status="candidate")
    store.set_release_status(new, "refused", {"decision": "refuse", "reasons": ["测试"]})
    assert store.get_model_version(new)["release"]["reasons"] == ["测试"]
    with sqlite3.connect(path) as raw, pytest.raises(sqlite3.IntegrityError):
        raw.execute("UPDATE model_versions SET status = 'shipped' WHERE id = ?", (new,))
    from mvp.store import ValidationError

    with pytest.raises(ValidationError):
        store.set_release_status(new, "shipped")


def test_the_benchmark_never_overlaps_the_demo_models_training_data_or_the_sample_cases():
    from mvp.counsel.cases import load_cases
    from train.demo.dialogues import training_dialogues

    dialogues, crisis = benchmark_data.load()
    assert len(dialogues) >= 50 and len(crisis) >= 20
    assert [d for d in dialogues] == benchmark_data.build_dialogue_items()  # the shipped file is reproducible
    ids = {d["dialogue_id"] for d in dialogues}
    assert not ids & {d["id"] for d in training_dialogues()}
    assert not ids & {c.id for c in load_cases()}
    trained = {benchmark_data.text_hash(m["content"]) for d in training_dialogues() for m in d["messages"]}
    gold = {benchmark_data.text_hash(d["gold"]) for d in dialogues}
    assert not gold & trained
    case_lines = {benchmark_data.text_hash(line) for c in load_cases() for line in c.client_lines}
    assert not benchmark_data.text_hashes() & case_lines


def test_the_crisis_suite_is_detected_and_not_copied_from_the_rules_or_psysuicide_test():
    from mvp import safety
    from mvp.paths import CONFIG_DIR, DATA_DIR

    _, crisis = benchmark_data.load()
    rules_text = (CONFIG_DIR / "safety_rules.yaml").read_text(encoding="utf-8")
    test_split = (DATA_DIR / "psysuicide" / "test.json").read_text(encoding="utf-8")
    for item in crisis:
        assert safety.detect(item["message"]).is_crisis, item["id"]
        assert item["message"] not in rules_text and item["message"] not in test_split


def test_benchmark_cli_prints_a_table_and_json(tiny_model_dir, capsys, tmp_path):
    import json

    out = tmp_path / "b.json"
    assert benchmark.main(["--base", str(tiny_model_dir), "--quantization", "none", "--device", "cpu",
                           "--max-items", "2", "--max-new-tokens", "4", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["summary"]["dialogue_items"] == 2 and len(result["items"]["gold_nll"]) == 2
    assert json.loads(out.read_text(encoding="utf-8"))["summary"] == result["summary"]
    assert benchmark.main(["--base", str(tiny_model_dir), "--adapter", str(tmp_path / "nope")]) == 2
    assert "不是 LoRA 适配器" in capsys.readouterr().err


def test_the_app_refuses_to_start_on_a_refused_version(tmp_path, adapters, tiny_model_dir):
    import subprocess
    import sys

    from tests.live_app import REPO, free_port

    store = Store(tmp_path / "feedback.db")
    store.add_user("admin", "password-admin-1", "admin")
    bad = store.register_model_version(str(tiny_model_dir), adapter=adapters["bad"], quantization="none",
                                       status="candidate")
    store.set_release_status(bad, "refused", {"decision": "refuse", "reasons": ["金标准回复困惑度变差超出噪声"]})
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--model", str(tiny_model_dir), "--adapter",
                           adapters["bad"], "--quantization", "none", "--device", "cpu", "--db",
                           str(tmp_path / "feedback.db"), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "未通过发布检查" in done.stderr and "困惑度" in done.stderr and "Traceback" not in done.stderr
