"""The files of one export, in every format our tools load: TRL JSONL, provenance (meta), LLaMA-Factory
sharegpt + dataset_info.json, BianQue input/target. Used by `train.export` (`python -m train.export`),
which selects, scrubs and splits the samples; `Writer` turns them into files and records rows and
sha256 of each (the manifest's "files").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from train import formats, samples
from train.data import file_sha256
from train.formats import FormatError

DATASET_PREFIX = "psy"  # dataset names in llamafactory/dataset_info.json: psy_{kind}_{split}


def trl_row(sample: samples.Sample) -> dict:
    if sample.kind == "dpo":
        return formats.trl_dpo_row(sample.prompt, sample.chosen, sample.rejected)
    if sample.kind == "kto":
        return formats.trl_kto_row(sample.prompt, sample.completion, sample.label)
    return formats.trl_sft_row(sample.prompt)


def sharegpt_row(sample: samples.Sample) -> dict:
    if sample.kind == "dpo":
        row = formats.sharegpt_ranking_row(sample.prompt, sample.chosen, sample.rejected)
    elif sample.kind == "kto":
        row = formats.sharegpt_kto_row(sample.prompt, sample.completion, sample.label)
    else:
        row = formats.to_sharegpt(sample.prompt)
    problem = formats.llamafactory_problem(row, sample.kind)
    if problem:
        raise FormatError(f"llamafactory_would_skip:{problem}")
    return row


class Writer:
    """Writes the files of one export into a folder and records rows and checksums."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, dict] = {}
        self.unrepresentable: Counter = Counter()
        self.folded = 0
        self.dataset_info: dict[str, dict] = {}

    def _record(self, rel: str, rows: int) -> None:
        path = self.root / rel
        self.files[rel] = {"rows": rows, "sha256": file_sha256(path), "bytes": path.stat().st_size}

    def jsonl(self, rel: str, rows: list) -> None:
        if rows:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            self._record(rel, formats.write_jsonl(self.root / rel, rows))

    def json_list(self, rel: str, rows: list) -> None:
        if rows:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            self._record(rel, formats.write_json_list(self.root / rel, rows))

    def kind_split(self, kind: str, split: str, rows: list[samples.Sample]) -> None:
        name = f"{kind}_{split}"
        self.jsonl(f"trl/{name}.jsonl", [trl_row(s) for s in rows])
        self.jsonl(f"meta/{name}.jsonl", [s.meta() for s in rows])
        sharegpt = []
        for sample in rows:
            try:
                sharegpt.append(sharegpt_row(sample))
            except FormatError as exc:
                self.unrepresentable[f"{name}:{exc.reason}"] += 1
                continue
            dialogue = formats.split_system(sample.prompt)[1]
            self.folded += bool(dialogue) and dialogue[0]["role"] == formats.ASSISTANT
        self.json_list(f"llamafactory/{name}.json", sharegpt)
        if sharegpt:
            self.dataset_info[f"{DATASET_PREFIX}_{name}"] = formats.dataset_info_entry(f"{name}.json", kind)

    def bianque(self, split: str, rows: list[samples.Sample]) -> None:
        out = []
        for sample in rows:
            try:
                out.append(formats.to_bianque(sample.prompt + [formats.message(formats.ASSISTANT, sample.completion)]))
            except FormatError as exc:
                self.unrepresentable[f"bianque_{split}:{exc.reason}"] += 1
        self.jsonl(f"bianque/sft_{split}.jsonl", out)

    def finish(self) -> None:
        if self.dataset_info:
            formats.write_json(self.root / "llamafactory" / "dataset_info.json", self.dataset_info)
            self._record("llamafactory/dataset_info.json", len(self.dataset_info))
