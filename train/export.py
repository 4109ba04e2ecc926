"""Export clinicians' judgements from feedback.db as training data, in every format our tools load.

    python -m train.export --db feedback.db --out exports/2026-11-27
    python -m train.export --db feedback.db --out exports/try2 --seed 1 --eval-fraction 0.2 \\
        --kto-threshold 4 --sft-threshold 4 --score-margin 2 --aggregate majority
    python -m train.export --db feedback.db --out exports/everything --include-demo --include-disabled
    python -m train.export --db feedback.db --out exports/agreed --min-rater-alpha 0.4 --rater-policy weight

From Python (the training pipeline): `export(db_path, out_dir, ExportOptions(...)) -> manifest dict`.

What goes in is decided by `train.samples` (DPO from comparisons, rewrites and score gaps; KTO from
ratings or thumbs; SFT as whole conversations and per turn); this module selects, scrubs, splits and
writes. Layout of `--out` (files with no rows are not written; the manifest lists what exists):

    manifest.json                      counts per source and format, drops and exclusions with
                                       reasons, options, stages file + sha256, model versions,
                                       scrub counts, sha256 and row count of every file
    trl/{dpo,kto,sft}_{train,eval}.jsonl     TRL conversational: prompt/chosen/rejected,
                                       prompt/completion/label (JSON bool), messages
    meta/{dpo,kto,sft}_{train,eval}.jsonl    one line per TRL row: source, conversation, message
                                       ids, model versions (provenance; not a training input)
    llamafactory/{dpo,kto,sft}_{train,eval}.json  sharegpt (ranking / kto_tag / plain)
    llamafactory/dataset_info.json     registers every file there (`dataset_dir` = this folder)
    bianque/sft_{train,eval}.jsonl     input/target per approved reply, instruction inside input
    assessment/item_scores.jsonl       screening items: answer, model score, clinician score
    memory/summaries.jsonl             session summaries (会谈摘要): content, author, turns covered
    memory/stage_transitions.jsonl     stage events (accepted / manual = transitions; suggested,
                                       dismissed) with the dialogue before each (train.memory_export)

Train/eval split by conversation (never one conversation on both sides), by a seeded hash, so a
conversation stays on its side as the database grows. Personal data is scrubbed by default with
`mvp.safety.privacy` (one mapping per conversation, so prompt, chosen and rejected agree). An empty or
ratings-free database is an error: a message, exit status 2, nothing written. The folder is built
under a temporary name and renamed into place; an existing folder is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sys
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from train import formats, memory_export, noise, samples
from train.rater_policy import RATER_POLICIES, rater_weights
from train.data import file_sha256
from train.export_files import Writer
from mvp.store.base import make_private

PRIVATE_DIR_MODE = 0o700
MANIFEST_VERSION = 1
SPLITS = ("train", "eval")
FORMAT_KINDS = ("dpo", "kto", "sft")
MAX_EVAL_FRACTION = 0.9


class ExportError(Exception):
    """A user error (missing database, nothing to export, bad option): shown without a traceback."""


@dataclass(frozen=True)
class ExportOptions(samples.SampleOptions):
    """Options of one export (the CLI flags; the manifest records them): what counts as good
    (the SampleOptions fields, declared once there) plus how the export is split and written."""

    seed: int = 0
    eval_fraction: float = 0.2
    min_eval_conversations: int = 5  # the eval split has at least this many (at most half of them all)
    scrub: bool = True
    overwrite: bool = False
    stages_file: str | None = None
    min_rater_alpha: float | None = None
    rater_policy: str = "exclude"

    def __post_init__(self) -> None:
        if self.min_rater_alpha is not None and not -1 < self.min_rater_alpha <= 1:
            raise ExportError(f"--min-rater-alpha 必须在 (-1, 1] 之间，收到 {self.min_rater_alpha}")
        if self.rater_policy not in RATER_POLICIES:
            raise ExportError(f"--rater-policy 必须是 {' / '.join(RATER_POLICIES)}，收到 {self.rater_policy!r}")
        if self.min_eval_conversations < 0:
            raise ExportError(f"--min-eval-conversations 不能为负，收到 {self.min_eval_conversations}")
        if not 0 <= self.eval_fraction <= MAX_EVAL_FRACTION:
            raise ExportError(f"--eval-fraction 必须在 0-{MAX_EVAL_FRACTION} 之间，收到 {self.eval_fraction}")
        try:  # thresholds, margin and aggregate checked here, before any work
            super().__post_init__()
        except samples.SampleError as exc:
            raise ExportError(str(exc)) from None

    def sample_options(self) -> samples.SampleOptions:
        return samples.SampleOptions(**{f.name: getattr(self, f.name) for f in fields(samples.SampleOptions)})


# -- inputs ------------------------------------------------------------------------------------
def _load_stages(path: str | None):
    from mvp.counsel.stages import StageFileError, load_stages

    try:
        return load_stages(path)
    except StageFileError as exc:
        raise ExportError(str(exc)) from None


def _scrubber(enabled: bool) -> samples.ScrubMessages | None:
    if not enabled:
        return None
    try:
        from mvp.safety.privacy import Scrubber, scrub_messages
    except ImportError as exc:
        raise ExportError(f"无法加载隐私脱敏模块 mvp.safety.privacy（{exc}）；确认数据已脱敏时可用 --no-scrub / "
                          "privacy module unavailable") from None
    # The hotline numbers to keep come from a config file: read it once, not once per conversation.
    keep_numbers = Scrubber().keep_numbers
    return lambda messages: scrub_messages(messages, keep_numbers=keep_numbers)


def _crisis_instruction() -> str | None:
    try:
        from mvp.safety import CRISIS_INSTRUCTION
    except ImportError:
        return None
    return CRISIS_INSTRUCTION


def read_snapshot(db_path: Path) -> tuple[dict[str, list[dict]], int]:
    """Everything, demo and disabled raters included (the flags let the builder count exclusions)."""
    from mvp.store import Store, StoreError

    if not db_path.is_file():
        raise ExportError(f"找不到数据库 / database not found: {db_path}")
    try:
        with Store(db_path) as store:
            return store.export_snapshot(include_demo=True, include_disabled=True), store.schema_version
    except StoreError as exc:
        raise ExportError(str(exc)) from None


def _rater_weights(db_path: Path, options: ExportOptions) -> tuple[dict[str, float] | None, dict | None]:
    if options.min_rater_alpha is None:
        return None, None
    from mvp.store import Store, StoreError

    try:
        with Store(db_path) as store:
            return rater_weights(store.agreement_report(include_demo=options.include_demo), options)
    except StoreError as exc:
        raise ExportError(str(exc)) from None


# -- the export ----------------------------------------------------------------------------------
def _counts(result: samples.BuildResult, eval_ids: set[int]) -> dict:
    counts: dict[str, Any] = {}
    for kind, rows in result.samples.items():
        entry: dict[str, Any] = {"total": len(rows), "by_source": dict(sorted(Counter(s.source for s in rows).items()))}
        for split in SPLITS:
            entry[split] = sum((s.conversation_id in eval_ids) == (split == "eval") for s in rows)
        if kind == "kto":
            entry["label_true"] = sum(s.label is True for s in rows)
            entry["label_false"] = sum(s.label is False for s in rows)
        counts[kind] = entry
    counts["assessment_items"] = len(result.assessment)
    return counts


def _model_versions(result: samples.BuildResult, snapshot: dict) -> list[dict]:
    used: Counter = Counter()
    for rows in result.samples.values():
        for sample in rows:
            used.update(sample.model_version_ids)
    keys = ("id", "label", "base_model", "adapter", "quantization", "backend", "parent_id", "created_at")
    return [{**{k: v.get(k) for k in keys}, "samples": used[v["id"]]}
            for v in snapshot["model_versions"] if v["id"] in used]


def _nothing_to_export(result: samples.BuildResult) -> bool:
    return not any(result.samples.values()) and not result.assessment


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder into place (replacing `out` only when asked)."""
    old = None
    if out.exists():
        if not overwrite:  # created by someone else while this export ran
            raise ExportError(f"输出目录已存在 / output exists: {out}（用 --overwrite 替换 / use --overwrite）")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: an export makes millions of small acyclic objects, which
    it would rescan again and again (measured: export time grew ~2.4x for 2x the ratings with it
    on, ~2x with it off). Reference counting still frees everything; collection resumes after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def export(db_path: str | os.PathLike, out_dir: str | os.PathLike, options: ExportOptions | None = None,
           *, scrub_messages: samples.ScrubMessages | None = None) -> dict:
    """Export feedback.db into `out_dir` (see the module docstring); returns the manifest.

    `scrub_messages` replaces `mvp.safety.privacy.scrub_messages` (same contract) when given; it is only
    used when `options.scrub` is on.
    """
    with _gc_paused():
        return _export(Path(db_path), Path(out_dir), options or ExportOptions(), scrub_messages)


def _export(db_path: Path, out: Path, options: ExportOptions,
            scrub_messages: samples.ScrubMessages | None) -> dict:
    sample_options = options.sample_options()
    if out.exists() and not options.overwrite:
        raise ExportError(f"输出目录已存在 / output exists: {out}（用 --overwrite 替换 / use --overwrite）")
    stages = _load_stages(options.stages_file)
    snapshot, schema_version = read_snapshot(db_path)
    weights, agreement_record = _rater_weights(db_path, options)
    builder = samples.build_samples(snapshot, stages, sample_options, _crisis_instruction(), weights)
    if not builder.has_feedback():
        raise ExportError("数据库中没有可导出的评分、点赞或比较记录，未写入任何文件 / no ratings, thumbs or "
                          f"comparisons to export, nothing written (excluded: "
                          f"{dict(builder.result.excluded) or 'none'})")
    if not options.scrub:
        scrub_messages = None
    elif scrub_messages is None:
        scrub_messages = _scrubber(True)
    result = builder.build()
    scrub_counts = samples.scrub_samples(result, scrub_messages) if scrub_messages else Counter()
    samples.deduplicate(result)
    if _nothing_to_export(result):
        drops = {k: dict(v) for k, v in result.drops.items() if v}
        raise ExportError(f"评分数据没有产生任何样本，未写入任何文件 / the ratings gave no samples, nothing "
                          f"written; dropped: {drops}")
    conversation_ids = [s.conversation_id for rows in result.samples.values() for s in rows]
    conversation_ids += [item["conversation_id"] for item in result.assessment]
    eval_ids = samples.split_conversations(conversation_ids, options.seed, options.eval_fraction,
                                           min_eval=options.min_eval_conversations)
    counts = _counts(result, eval_ids)
    warnings = noise.split_warnings(len(eval_ids), {label: counts[k]["eval"] for k, label in
                                                    (("dpo", "偏好对"), ("sft", "SFT 对话")) if k in counts})

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=PRIVATE_DIR_MODE)  # exports hold client text: readable by this account only
    try:
        writer = Writer(tmp)
        for split in SPLITS:
            def pick(rows: list[samples.Sample]) -> list[samples.Sample]:
                return [s for s in rows if (s.conversation_id in eval_ids) == (split == "eval")]

            for kind in FORMAT_KINDS:
                writer.kind_split(kind, split, pick(result.samples[kind]))
            writer.bianque(split, pick(result.samples["turn"]))
        writer.jsonl("assessment/item_scores.jsonl", [
            {**item, "split": "eval" if item["conversation_id"] in eval_ids else "train"}
            for item in result.assessment])
        summaries, stage_events, memory_scrub = memory_export.memory_rows(
            snapshot, sample_options.include_demo, scrub_messages)
        scrub_counts.update(memory_scrub)
        for rel, rows in (("memory/summaries.jsonl", summaries), ("memory/stage_transitions.jsonl", stage_events)):
            writer.jsonl(rel, [{**r, "split": "eval" if r["conversation_id"] in eval_ids else "train"} for r in rows])
        writer.finish()
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "database": {"path": str(db_path.resolve()), "schema_version": schema_version},
            "options": {k: v for k, v in asdict(options).items() if k != "overwrite"},
            "stages": {"file": str(stages.path), "sha256": file_sha256(Path(stages.path))},
            "system_prompt_rule": f"gen_params.{samples.SYSTEM_PROMPT_KEY} when recorded, else the "
                                  "stage instruction (crisis instruction first after a crisis)",
            "inputs": result.inputs,
            "rater_agreement": agreement_record,
            "excluded": dict(sorted(result.excluded.items())),
            "split": {"by": "conversation (seeded hash)", "seed": options.seed,
                      "eval_fraction": options.eval_fraction, "min_eval_conversations": options.min_eval_conversations,
                      "train_conversations": len(set(conversation_ids) - eval_ids),
                      "eval_conversations": len(eval_ids), "eval_conversation_ids": sorted(eval_ids)},
            "counts": {**counts, "memory": memory_export.memory_counts(summaries, stage_events)},
            "warnings": warnings,
            "drops": {kind: dict(sorted(c.items())) for kind, c in sorted(result.drops.items()) if c},
            "notes": dict(sorted(result.notes.items())),
            "formats": {
                "trl": {rel: f["rows"] for rel, f in writer.files.items() if rel.startswith("trl/")},
                "llamafactory": {
                    "rows": {rel: f["rows"] for rel, f in writer.files.items()
                             if rel.startswith("llamafactory/") and not rel.endswith("dataset_info.json")},
                    "datasets": sorted(writer.dataset_info),
                    "leading_assistant_folded_into_system": writer.folded,
                },
                "bianque": {rel: f["rows"] for rel, f in writer.files.items() if rel.startswith("bianque/")},
                "unrepresentable": dict(sorted(writer.unrepresentable.items())),
            },
            "model_versions": _model_versions(result, snapshot),
            "scrub": {"enabled": options.scrub, "counts": dict(sorted(scrub_counts.items())),
                      "total": sum(scrub_counts.values())},
            "files": dict(sorted(writer.files.items())),
        }
        formats.write_json(tmp / "manifest.json", manifest)
        _make_private(tmp)
        _install(tmp, out, options.overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _make_private(root: Path) -> None:
    """Folders 0700 and files 0600 (make_private's mode), whatever the umask was."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(PRIVATE_DIR_MODE)
        else:
            make_private(path)


# -- command line ----------------------------------------------------------------------------------
def summary_table(manifest: dict) -> str:
    lines = [f"{'kind':<8} {'total':>7} {'train':>7} {'eval':>6}  by source"]
    for kind in ("dpo", "kto", "sft", "turn"):
        c = manifest["counts"][kind]
        lines.append(f"{kind:<8} {c['total']:>7} {c['train']:>7} {c['eval']:>6}  {c['by_source']}")
    lines.append(f"assessment items: {manifest['counts']['assessment_items']}; "
                 f"scrubbed: {manifest['scrub']['counts'] or 'nothing'}"
                 f"{'' if manifest['scrub']['enabled'] else ' (scrubbing OFF)'}")
    dropped = {k: sum(v.values()) for k, v in manifest["drops"].items()}
    lines.append(f"dropped (reasons in manifest.json): {dropped or 'none'}; excluded: "
                 f"{manifest['excluded'] or 'none'}")
    lines += [f"警告：{w}" for w in manifest.get("warnings", [])]
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    d = ExportOptions()
    parser = argparse.ArgumentParser(
        prog="python -m train.export",
        description="Export ratings, rewrites, comparisons and thumbs from feedback.db as DPO / KTO / "
        "SFT training data (TRL, LLaMA-Factory, BianQue formats) with a manifest.json.")
    parser.add_argument("--db", required=True, type=Path, help="the app's feedback database (feedback.db)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. exports/2026-11-27")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the train/eval split (default {d.seed})")
    parser.add_argument("--eval-fraction", type=float, default=d.eval_fraction,
                        help=f"share of conversations held out for eval, 0-{MAX_EVAL_FRACTION} (default {d.eval_fraction})")
    parser.add_argument("--min-eval-conversations", type=int, default=d.min_eval_conversations,
                        help=f"at least this many eval conversations, at most half of all (default {d.min_eval_conversations})")
    parser.add_argument("--kto-threshold", type=float, default=d.kto_threshold,
                        help=f"aggregated overall score at or above which a reply is a good KTO example (default {d.kto_threshold:g})")
    parser.add_argument("--sft-threshold", type=float, default=d.sft_threshold,
                        help=f"aggregated overall score at or above which a reply is trained on in SFT (default {d.sft_threshold:g})")
    parser.add_argument("--score-margin", type=float, default=d.score_margin,
                        help=f"minimum score gap between two alternatives of a turn to make a DPO pair (default {d.score_margin:g})")
    parser.add_argument("--aggregate", choices=samples.AGGREGATES, default=d.aggregate,
                        help="how several raters' overall scores of one reply combine (default mean; "
                        "majority = the most frequent score, none on a tie)")
    parser.add_argument("--include-demo", action="store_true", help="also export demo conversations")
    parser.add_argument("--include-disabled", action="store_true",
                        help="also use ratings, thumbs and comparisons of disabled accounts")
    parser.add_argument("--no-scrub", dest="scrub", action="store_false",
                        help="do NOT replace personal data (phone numbers, ID numbers, names...) in the export")
    parser.add_argument("--min-rater-alpha", type=float, default=None, metavar="ALPHA",
                        help="leave out (or down-weight) raters whose Krippendorff's alpha on the overall score, "
                        "against the other raters, is below ALPHA (see python -m train.agreement); default: off")
    parser.add_argument("--rater-policy", choices=RATER_POLICIES, default=d.rater_policy,
                        help="with --min-rater-alpha: exclude such raters, or weight them by alpha / ALPHA (default exclude)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    parser.add_argument("--stages", dest="stages_file", metavar="YAML",
                        help="stages file whose instructions were the system prompts (default config/stages.yaml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    names = {f.name for f in fields(ExportOptions)}
    try:
        options = ExportOptions(**{k: v for k, v in vars(args).items() if k in names})
        manifest = export(args.db, args.out, options)
    except ExportError as exc:
        print(f"错误 / error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(manifest))
    print(f"written: {args.out}/ (manifest.json lists {len(manifest['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
