"""One command from clinicians' ratings to the next served model version.

    python -m train.pipeline --config train/configs/demo.yaml            # CPU, demo model, < 10 min
    python -m train.pipeline --config train/configs/demo.yaml --force    # rerun every stage
    python -m train.pipeline --config my.yaml --db other.db --run-dir runs/try2

Steps: export feedback.db (train.export) -> the stages listed in `stages`, in order -> evaluation of
the new version against its parent (train.evaluate) -> a new model version in feedback.db (parent,
data manifest, metrics, created time) registered as a CANDIDATE -> the release gate (train.release:
both versions scored on the fixed set in data/benchmark/, train.gate decides): "servable" only when
it does not regress beyond noise, otherwise "refused" with the reasons (printed in Chinese, in
eval.json and pipeline.json); `--promote-anyway REASON` serves it anyway and records why. The app
serves a servable version (`python app.py --model BASE --adapter ADAPTER`, printed at the end) and
offers it in the blind arena next to its parent.

How stages feed each other. ONE LoRA adapter on the unchanged base is carried through the policy
stages (pt, sft, dpo, rl): each continues the previous stage's adapter (mvp.model.loader loads it trainable),
and DPO/KTO/RL use a frozen copy of that adapter as their reference model, so the reference is the SFT
policy as DPO intends. Nothing is merged: merging into a 4-bit base is not possible (QLoRA), and the
app serves base + adapter directly. The first policy stage continues the parent version's adapter
(`continue_parent_adapter`), so each iteration builds on what clinicians rated. `rm` trains a separate
reward model (sequence classifier + LoRA on the base) used by `rl` and by the evaluation.

Skipping: every stage writes a hash of its inputs (data files, base model, input adapter, its config)
next to its output; a stage whose hash matches is skipped, so a rerun with the same database and
config does no training. The published adapter is copied to RUN_DIR/versions/HASH/, so a new
iteration never overwrites an adapter that an older model version still points to.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvp.model.loader import canonical_ref
from train import evaluate, outputs, registry, release
from train.lineage import find_parent, publish  # noqa: F401 - part of this module's API
from train.config import (USER_ERRORS, ConfigError, DataError, check_model_choices, config_from_dict, log, parse_config,
                          suggest)

STAGES = registry.stages()  # name -> Stage, in the registry's order: the pipeline keeps no table of its own
# Set by the pipeline for every stage; a stage section may not set them.
MANAGED_KEYS = ("model", "adapter", "quantization", "device", "output_dir", "data", "eval_data")
MISSING_DATA = ("error", "skip")
# With a pipeline time_budget_s: seconds kept back for the evaluation, and per stage for loading the
# model, tokenising and saving (the stages' wall-clock stop only covers their training loop).
EVAL_RESERVE_S = 60.0
STAGE_OVERHEAD_S = 15.0
MIN_STAGE_TRAIN_S = 10.0
EVAL_FILE = "eval.json"
SUMMARY_FILE = "pipeline.json"


@dataclass
class PipelineSettings:
    """The pipeline's own settings; PipelineConfig below adds one section per registered stage."""

    db: str = field(default="feedback.db", metadata={"help": "应用的数据库 feedback.db（评分从这里导出，新版本登记到这里）"})
    base_model: str = field(default="demo", metadata={"help": "基座模型（与应用 --model 相同的写法：demo、文件夹或模型 id）"})
    quantization: str = field(default="auto", metadata={"help": "auto（CUDA 上 4-bit = QLoRA，CPU 上不量化）|4bit|8bit|none"})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})
    run_dir: str = field(default="runs/demo", metadata={"help": "这次迭代的工作文件夹：export/、各阶段输出、versions/、eval.json"})
    stages: list[str] = field(default_factory=lambda: ["sft", "dpo"], metadata={"help": f"按顺序运行的阶段：{'、'.join(STAGES)} 中的若干个"})
    parent: str = field(default="auto", metadata={"help": "父版本：auto（数据库里同一基座最新的版本）、none 或版本 id"})
    continue_parent_adapter: bool = field(default=True, metadata={"help": "第一个策略阶段在父版本的适配器上继续训练（否则从基座新建 LoRA）"})
    missing_data: str = field(default="error", metadata={"help": "导出里没有某阶段需要的数据时：error 报错，skip 跳过该阶段并记录"})
    time_budget_s: float | None = field(default=None, metadata={"help": "整条流水线的时间上限（秒）：剩余时间平均分给剩下的阶段（各阶段 time_budget_s 取较小者），并为评估预留时间"})
    label: str | None = field(default=None, metadata={"help": "新版本的名称（默认：run_dir 名 + 时间）"})
    register: bool = field(default=True, metadata={"help": "把新适配器登记为 feedback.db 里的新模型版本"})
    export: dict[str, Any] = field(default_factory=dict, metadata={"help": "train.export 的选项（ExportOptions 字段，如 eval_fraction、include_demo）"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={"help": "评估的配置（EvalConfig 字段，如 max_samples、max_new_tokens）"})
    gate: dict[str, Any] = field(default_factory=dict, metadata={"help": "发布检查：固定评估集的 max_new_tokens、max_items 和 GateSettings 字段（如 nll_margin、crisis_floor）"})

    def __post_init__(self) -> None:
        check_model_choices(self)
        if self.missing_data not in MISSING_DATA:
            raise ConfigError(f"missing_data: {self.missing_data!r} 无效，可选 error、skip")
        for name in self.stages:
            registry.get(name)  # an unknown name is a ConfigError listing the registered stages
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages: 每个阶段只能出现一次，收到 {self.stages}")
        policy = [n for n, st in STAGES.items() if st.policy]
        if not any(STAGES[s].policy for s in self.stages):
            raise ConfigError(f"stages: 至少要有一个训练对话模型的阶段（{'、'.join(policy)}），"
                              f"{'、'.join(n for n in STAGES if n not in policy)} 本身不产生新版本")
        for i, name in enumerate(self.stages):
            if STAGES[name].needs_reward_model and "reward_model" not in getattr(self, name):
                if not any(STAGES[s].makes_reward_model for s in self.stages[:i]):
                    makers = "、".join(n for n, st in STAGES.items() if st.makes_reward_model)
                    raise ConfigError(f"stages: {name} 需要奖励模型：把 {makers} 放在 {name} 之前，"
                                      f"或在 {name}: 中给出 reward_model")
        if self.time_budget_s is not None and self.time_budget_s <= EVAL_RESERVE_S:
            raise ConfigError(f"time_budget_s: 至少要大于评估预留的 {EVAL_RESERVE_S:.0f} 秒")
        if self.parent not in ("auto", "none") and not self.parent.isdigit():
            raise ConfigError(f"parent: 应为 auto、none 或版本 id，收到 {self.parent!r}")
        # Check every section now, so a typo in the last stage fails before the first one trains.
        for name in STAGES:
            section_config(self, name, placeholders=True)
        eval_config(self, adapter=None, parent_adapter=None, data="-", reward_model=None, out=None)
        export_options(self)
        release.check_section(self.gate)


PipelineConfig = dataclasses.make_dataclass(
    "PipelineConfig",
    [(name, dict[str, Any], field(default_factory=dict, metadata={
        "help": f"{name} 阶段的配置（{stage.config_cls.__name__} 字段）：{stage.help}"})) for name, stage in STAGES.items()],
    bases=(PipelineSettings,))
PipelineConfig.__module__ = __name__
PipelineConfig.__doc__ = "The pipeline's YAML: PipelineSettings plus a section (a mapping) per registered stage."


def _section(cfg: PipelineConfig, name: str) -> dict:
    section = getattr(cfg, name)
    for key in MANAGED_KEYS:
        if key in section and not (key == "data" and not STAGES[name].uses_export):
            raise ConfigError(f"{name}.{key}: 由流水线设置（base_model、run_dir 等），不能在阶段配置里给出")
    return dict(section)


def section_config(cfg: PipelineConfig, name: str, *, placeholders: bool = False, adapter: str | None = None,
                   data: str | None = None, output_dir: str | None = None, reward_model: str | None = None):
    """The stage's config dataclass from its YAML section plus what the pipeline manages."""
    values = _section(cfg, name)
    values.update(model=cfg.base_model, quantization=cfg.quantization, device=cfg.device, adapter=adapter,
                  output_dir=output_dir or ("-" if placeholders else ""))
    stage = STAGES[name]
    if stage.uses_export or data is not None:
        values["data"] = data if data is not None else "-"
    if stage.needs_reward_model and reward_model is not None:
        values["reward_model"] = reward_model
    elif stage.needs_reward_model and placeholders and "reward_model" not in values:
        values["reward_model"] = "-"
    return config_from_dict(stage.config_cls, values, source=f"{name}:")


def eval_config(cfg: PipelineConfig, *, adapter, parent_adapter, data, reward_model, out) -> evaluate.EvalConfig:
    values = dict(cfg.evaluate)
    for key in ("base", "adapter", "parent_adapter", "data", "out", "quantization", "device"):
        if key in values:
            raise ConfigError(f"evaluate.{key}: 由流水线设置，不能在 evaluate 配置里给出")
    values.setdefault("reward_model", reward_model)
    values.update(base=cfg.base_model, adapter=adapter, parent_adapter=parent_adapter, data=data, out=out,
                  quantization=cfg.quantization, device=cfg.device)
    return config_from_dict(evaluate.EvalConfig, values, source="evaluate:")


def export_options(cfg: PipelineConfig):
    from train.export import ExportError, ExportOptions

    known = {f.name for f in dataclasses.fields(ExportOptions)} - {"overwrite"}
    for key in cfg.export:
        if key not in known:
            raise ConfigError(f"export: 未知的导出选项 {key!r}{suggest(key, known)}"
                                     f"（可用：{', '.join(sorted(known))}）")
    try:
        return ExportOptions(**cfg.export, overwrite=True)
    except (ExportError, TypeError) as exc:
        raise ConfigError(f"export: {exc}") from exc


# ---------------------------------------------------------------------------------------------


def serving_quantization(cfg: PipelineConfig) -> str:
    from mvp.model.loader import resolve_device, resolve_quantization

    return resolve_quantization(cfg.quantization, resolve_device(cfg.device))


def run_export(cfg: PipelineConfig, run_dir: Path) -> tuple[Path, dict]:
    from train.export import ExportError, export

    out = run_dir / "export"
    log("export", f"从 {cfg.db} 导出到 {out}")
    try:
        manifest = export(cfg.db, out, export_options(cfg))
    except ExportError as exc:
        raise DataError(f"导出失败：{exc}") from exc
    counts = {k: manifest["counts"][k]["total"] for k in ("dpo", "kto", "sft") if k in manifest["counts"]}
    log("export", f"样本数：{counts}")
    for warning in manifest.get("warnings", []):
        log("export", f"警告：{warning}")
    return out, manifest


def _has_data(name: str, stage_cfg, export_dir: Path) -> bool:
    kind = STAGES[name].data_kind(stage_cfg)
    if kind is None:  # reads no export (pt: plain text)
        return True
    path = export_dir / "trl" / f"{kind}_train.jsonl"
    return path.is_file() and any(line.strip() for line in open(path, encoding="utf-8"))


def stage_share(cfg: PipelineConfig, started: float, stages_left: int, own: float | None) -> float:
    """This stage's training seconds: an equal share of what is left before the evaluation reserve."""
    left = cfg.time_budget_s - (time.monotonic() - started) - EVAL_RESERVE_S
    share = max(MIN_STAGE_TRAIN_S, left / stages_left - STAGE_OVERHEAD_S)
    return min(share, own) if own else share


def run_stage(name: str, stage_cfg, force: bool) -> tuple[Path, str]:
    stage = STAGES[name]
    digest = stage.digest(stage_cfg)
    if not force and outputs.is_done(stage_cfg.output_dir, digest):
        log(name, f"输入和配置未变，跳过（{stage_cfg.output_dir}）")
        return Path(stage_cfg.output_dir), "skipped"
    stage.run(stage_cfg)
    return Path(stage_cfg.output_dir), "ran"


def _manifest_summary(manifest: dict, export_dir: Path) -> dict:
    return {
        "export_dir": str(export_dir.resolve()),
        "created_at": manifest.get("created_at"),
        "database": manifest.get("database"),
        "options": manifest.get("options"),
        "counts": manifest.get("counts"),
        "drops": manifest.get("drops"),
        "model_versions": manifest.get("model_versions"),
        "files": {rel: f.get("sha256") for rel, f in (manifest.get("files") or {}).items() if rel.startswith("trl/")},
    }


def run(cfg: PipelineConfig, force: bool = False, promote_anyway: str | None = None) -> dict:
    from mvp.store import Store

    started = time.monotonic()
    if not Path(cfg.db).is_file():
        raise DataError(f"db: 找不到数据库 {cfg.db}（应用运行后才有；或用 --db 指向它）")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db)
    parent = find_parent(store, cfg)
    parent_adapter = parent.get("adapter") if parent else None
    if parent_adapter and not (Path(parent_adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"父版本 {parent['id']} 的适配器 {parent_adapter} 在这台机器上不存在")
    log("pipeline", f"父版本：{parent['id'] if parent else '无'}（适配器 {parent_adapter or '无，基座本身'}）")

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    export_dir, manifest = run_export(cfg, run_dir)
    timings["export"] = round(time.monotonic() - t0, 2)

    policy_adapter = parent_adapter if cfg.continue_parent_adapter else None
    # A reward model given in a stage's section (rl: reward_model:) is also the evaluation's.
    reward_model = next((getattr(cfg, n)["reward_model"] for n, st in STAGES.items()
                         if st.needs_reward_model and "reward_model" in getattr(cfg, n)), None)
    statuses: dict[str, str] = {}
    for i, name in enumerate(cfg.stages):
        t0 = time.monotonic()
        stage = STAGES[name]
        adapter = policy_adapter if stage.policy else None
        stage_cfg = section_config(cfg, name, adapter=adapter, output_dir=str(run_dir / name),
                                   data=str(export_dir) if stage.uses_export else None,
                                   reward_model=reward_model if stage.needs_reward_model else None)
        if cfg.time_budget_s is not None:
            stage_cfg.time_budget_s = stage_share(cfg, started, len(cfg.stages) - i, stage_cfg.time_budget_s)
        if not _has_data(name, stage_cfg, export_dir):
            message = f"导出里没有 {name} 阶段需要的训练数据（见 {export_dir / 'manifest.json'}）"
            if cfg.missing_data == "error":
                raise DataError(message + "；或设 missing_data: skip 跳过该阶段")
            log(name, message + "，跳过该阶段")
            statuses[name] = "no data"
            continue
        out, statuses[name] = run_stage(name, stage_cfg, force)
        timings[name] = round(time.monotonic() - t0, 2)
        if stage.policy:
            policy_adapter = str(out)
        if stage.makes_reward_model:
            reward_model = str(out)
    if not any(statuses.get(s) in ("ran", "skipped") for s in cfg.stages if STAGES[s].policy):
        raise DataError("没有任何策略阶段得到训练数据，没有新版本可登记")

    published = publish(Path(policy_adapter), run_dir)
    log("pipeline", f"新适配器：{published}")

    t0 = time.monotonic()
    eval_cfg = eval_config(cfg, adapter=str(published), parent_adapter=parent_adapter, data=str(export_dir),
                           reward_model=reward_model, out=str(run_dir / EVAL_FILE))
    if evaluate.has_eval_data(export_dir, eval_cfg.split):
        metrics = evaluate.run_if_changed(eval_cfg, force)
        print(evaluate.table(metrics), flush=True)
    else:  # a small database can leave the eval split empty: register anyway, and say so
        log("evaluate", f"导出的 {eval_cfg.split} 划分没有 SFT 对话或偏好对，跳过评估"
                               "（可调大 export.eval_fraction）")
        metrics = {"new": {}, "parent": {}, "implicit_preference_accuracy": None,
                   "implicit_reward_margin": None, "skipped": f"no {eval_cfg.split} data in the export"}
    timings["evaluate"] = round(time.monotonic() - t0, 2)

    version_id = None
    quantization = serving_quantization(cfg)
    if cfg.register:
        label = cfg.label or f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        version_metrics = {"new": metrics["new"], "parent": metrics["parent"],
                           "implicit_preference_accuracy": metrics["implicit_preference_accuracy"],
                           "implicit_reward_margin": metrics["implicit_reward_margin"],
                           "stages": cfg.stages, "eval_file": str((run_dir / EVAL_FILE).resolve()),
                           **({"evaluation_skipped": metrics["skipped"]} if "skipped" in metrics else {})}
        base = canonical_ref(cfg.base_model)
        existing = {(v["base_model"], v["adapter"], v["quantization"]): v["id"] for v in store.list_model_versions()}
        version_metrics["reward_score_kind"] = "in-run"  # trained in this run: not a held-out measure
        version_metrics["eval_warnings"] = manifest.get("warnings", [])
        version_id = store.register_model_version(
            base, adapter=str(published), quantization=quantization, backend="inprocess",
            label=label, parent_id=parent["id"] if parent else None,
            data_manifest=_manifest_summary(manifest, export_dir), metrics=version_metrics, status="candidate")
        if (base, str(published), quantization) in existing:
            store.set_model_version_metrics(version_id, version_metrics)
            log("pipeline", f"这个适配器已登记为版本 {version_id}，只更新了评估指标")
        else:
            log("pipeline", f"已登记新模型版本 {version_id}（候选，父版本 {parent['id'] if parent else '无'}）")
        gate_record = release.release(store, version_id, cfg, adapter=str(published), parent_adapter=parent_adapter,
                                      run_dir=run_dir, promote_anyway=promote_anyway)
        metrics["release"] = gate_record
        (run_dir / EVAL_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    status = gate_record["status"] if cfg.register else None
    serve = f"python app.py --model {cfg.base_model} --adapter {published} --quantization {quantization}"
    summary = {
        "status": status, "release": ({"decision": gate_record["decision"], "reasons": gate_record["reasons"],
                                       "override": gate_record.get("override")} if cfg.register else None),
        "eval_warnings": manifest.get("warnings", []),
        "version_id": version_id, "parent_id": parent["id"] if parent else None,
        "base_model": cfg.base_model, "adapter": str(published), "quantization": quantization,
        "reward_model": reward_model, "stages": statuses, "timings_s": timings,
        "total_s": round(time.monotonic() - started, 2), "finished_at": outputs.utc_now(),
        "serve": serve if status in (None, "servable") else None,
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    if status == "refused":
        log("pipeline", f"完成（{summary['total_s']:.0f} 秒）。版本 {version_id} 未通过发布检查，应用不会把它作为主模型："
                        f"{'；'.join(gate_record['reasons'])}。确需使用时重跑并加 --promote-anyway \"理由\"")
    else:
        log("pipeline", f"完成（{summary['total_s']:.0f} 秒）。用新版本启动应用：{summary['serve']}")
    return summary


def main(argv=None) -> int:
    from mvp.store import StoreError

    def extra(parser):
        parser.add_argument("--force", action="store_true", help="重新运行所有阶段，即使输入和配置没变")
        parser.add_argument("--promote-anyway", metavar="REASON", default=None,
                            help="发布检查未通过也把新版本设为可服务，并记录这个理由（谁、何时）")

    try:
        cfg, extras = parse_config(PipelineConfig, argv, prog="python -m train.pipeline",
                                          description="一条命令：导出评分 → 训练各阶段 → 评估 → 登记新模型版本（候选）→ 发布检查",
                                          extra_flags=extra)
        if extras.get("promote_anyway") is not None and not extras["promote_anyway"].strip():
            raise ConfigError("--promote-anyway 需要写明理由")
        run(cfg, force=bool(extras.get("force")), promote_anyway=extras.get("promote_anyway"))
    except (*USER_ERRORS, StoreError, release.benchmark_data.BenchmarkError) as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
