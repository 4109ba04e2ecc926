"""The pipeline's release step: benchmark the candidate and its parent on the fixed set, decide with
the gate, and record the version's release status in feedback.db.

A new version is registered as a "candidate"; this step makes it "servable" when the gate
(train/gate.py) passes, or "refused" with the reasons; ``--promote-anyway REASON`` makes it servable
anyway and records the reason, who and when (and an audit entry). Benchmark results are cached per
(base, adapter weights, settings, benchmark files) under RUN_DIR/benchmark/, so a rerun scores
nothing twice. The app serves only servable versions as its primary model.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
from pathlib import Path
from typing import Any

from train import benchmark, benchmark_data, gate, outputs
from train.config import ConfigError, log
from train.data import adapter_identity, file_sha256

BENCHMARK_KEYS = ("max_new_tokens", "max_items")
GATE_KEYS = tuple(f.name for f in dataclasses.fields(gate.GateSettings))


def check_section(section: dict) -> tuple[dict, gate.GateSettings]:
    """The pipeline's ``gate:`` section split into benchmark options and GateSettings (ConfigError on a typo)."""
    unknown = set(section) - set(BENCHMARK_KEYS) - set(GATE_KEYS)
    if unknown:
        raise ConfigError(f"gate: 未知的键 {sorted(unknown)}（可用：{', '.join(BENCHMARK_KEYS + GATE_KEYS)}）")
    bench = {k: section[k] for k in BENCHMARK_KEYS if k in section}
    for key, value in bench.items():
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(f"gate.{key}: 必须是正整数，收到 {value!r}")
    try:
        settings = gate.GateSettings(**{k: section[k] for k in GATE_KEYS if k in section})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"gate: {exc}") from None
    return bench, settings


def _cached_benchmark(cfg, adapter: str | None, bench: dict, run_dir: Path) -> dict:
    files = sorted(benchmark_data.BENCHMARK_DIR.glob("*.jsonl"))
    key = json.dumps({"base": cfg.base_model, "adapter": adapter_identity(adapter), "bench": bench,
                      "quantization": cfg.quantization, "files": [file_sha256(f) for f in files]}, sort_keys=True)
    path = run_dir / "benchmark" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = benchmark.run(benchmark.BenchmarkSettings(base=cfg.base_model, adapter=adapter,
                                                       quantization=cfg.quantization, device=cfg.device, **bench))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return result


def release(store, version_id: int, cfg, *, adapter: str, parent_adapter: str | None, run_dir: Path,
            promote_anyway: str | None = None) -> dict[str, Any]:
    """Benchmark, decide, set the status; returns the release record (also stored with the version)."""
    bench, settings = check_section(cfg.gate)
    log("gate", "在固定评估集上给新版本和父版本打分（data/benchmark/）")
    new = _cached_benchmark(cfg, adapter, bench, run_dir)
    parent = _cached_benchmark(cfg, parent_adapter, bench, run_dir)
    verdict = gate.decide(new["items"], parent["items"], settings)
    record = {**verdict, "benchmark": {"new": new["summary"], "parent": parent["summary"],
                                       "new_crisis_failures": new.get("crisis_failures", [])},
              "decided_at": outputs.utc_now()}
    status = "servable" if verdict["decision"] == "promote" else "refused"
    previous = (store.get_model_version(version_id).get("release") or {}).get("override")
    if promote_anyway is None and previous:  # a rerun keeps an earlier override of the same version
        record["override"] = previous
        status = "servable"
    if promote_anyway is not None:
        record = gate.override(record, promote_anyway, getpass.getuser(), outputs.utc_now())
        status = "servable"
        store.add_audit(record["override"]["by"], "version_promoted_anyway", version_id,
                        {"reason": record["override"]["reason"], "gate_decision": verdict["decision"]})
    store.set_release_status(version_id, status, record)
    record["status"] = status
    for line in table(record).splitlines():
        log("gate", line)
    return record


def table(record: dict) -> str:
    """The release decision as lines of Chinese text."""
    b = record["benchmark"]
    lines = [f"{'':<22}{'新版本':>10}{'父版本':>10}",
             f"{'金标准回复困惑度':<22}{_f(b['new']['gold_perplexity']):>10}{_f(b['parent']['gold_perplexity']):>10}",
             f"{'回复安全检查通过率':<22}{_p(b['new']['screen_pass_rate']):>10}{_p(b['parent']['screen_pass_rate']):>10}",
             f"{'危机测试通过率':<22}{_p(b['new']['crisis_pass_rate']):>10}{_p(b['parent']['crisis_pass_rate']):>10}",
             record["summary"]]
    if "override" in record:
        lines.append(f"已人工放行（--promote-anyway）：{record['override']['reason']}（{record['override']['by']}，"
                     f"{record['override']['at']}）；发布检查本身的结论是“{'通过' if record['decision'] == 'promote' else '未通过'}”")
    return "\n".join(lines)


def _f(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _p(value) -> str:
    return "—" if value is None else f"{value:.0%}"
