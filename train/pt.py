"""Continued pre-training (PT) with LoRA on plain domain text: next-token loss on every token.

    python -m train.pt --model demo --data data --output-dir runs/pt --max-steps 50
    python -m train.pt --config train/configs/demo.yaml      # (the pipeline passes its pt: section)

`data` is a text file, a JSONL file or a folder of them (read in name order):
- `.txt`: documents separated by blank lines;
- `.jsonl`: rows with a "text" field, or dialogue rows with "messages" (their contents joined by
  newlines: the bundled dialogues in data/ work as they are).
Long documents are cut into windows of `max_length` tokens so nothing past the first window is lost.
The run itself is `train.registry.run_stage`; the trainer is sft's (`train.sft.lm_trainer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from train import data as data_mod
from train.config import ConfigError, DataError, StageConfig, check_stage_config, log
from train.registry import Stage, StageData, main_for
from train.sft import lm_trainer

TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class PTStageConfig(StageConfig):
    data: str = field(default="data", metadata={"help": "纯文本：.txt（空行分隔文档）、.jsonl（text 或 messages 字段）或包含它们的文件夹"})
    min_chars: int = field(default=8, metadata={"help": "短于这么多字符的文档不用（计数记录在 train_config.json）"})
    plain_loss: bool = field(default=True, metadata={"help": "用模型自己的损失代替 TRL 的融合 LM 头（CPU 上更快；结果相同）"})

    def __post_init__(self) -> None:
        check_stage_config(self)
        if self.min_chars < 0:
            raise ConfigError(f"min_chars: 不能为负，收到 {self.min_chars!r}")


def text_files(data: str) -> list[Path]:
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"data: 文件夹 {data} 里没有 .txt 或 .jsonl 文件")
        return files
    if not path.is_file():
        raise DataError(f"data: 找不到文件或文件夹 {data}")
    if path.suffix not in TEXT_SUFFIXES:
        raise DataError(f"data: {data} 不是 .txt 或 .jsonl 文件")
    return [path]


def read_documents(files: list[Path]) -> tuple[list[str], dict]:
    """Documents from text/JSONL files, with per-file counts; an unusable JSONL row is counted, not hidden."""
    docs: list[str] = []
    report = {"files": [], "unusable_rows": []}
    for path in files:
        before = len(docs)
        if path.suffix == ".txt":
            text = path.read_text(encoding="utf-8")
            docs.extend(part.strip() for part in text.split("\n\n") if part.strip())
        else:
            for number, row in data_mod.read_jsonl(path):
                if isinstance(row, dict) and isinstance(row.get("text"), str):
                    docs.append(row["text"].strip())
                elif isinstance(row, dict) and isinstance(row.get("messages"), list):
                    docs.append("\n".join(m.get("content", "") for m in row["messages"] if isinstance(m, dict)))
                else:
                    report["unusable_rows"].append({"file": path.name, "line": number,
                                                    "why": "没有 text 或 messages 字段"})
        report["files"].append({"file": str(path), "documents": len(docs) - before})
    return docs, report


def windows(docs: list[str], tokenizer, max_length: int, min_chars: int) -> tuple[list[dict], int]:
    """Cut each document into pieces of at most max_length tokens (decoded back to text); count short ones."""
    rows, short = [], 0
    for doc in docs:
        if len(doc) < min_chars:
            short += 1
            continue
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        step = max_length - 1  # room for the end-of-text token SFTTrainer appends
        for start in range(0, len(ids), step):
            rows.append({"text": tokenizer.decode(ids[start:start + step])})
    return rows, short


class PTStage(Stage):
    name = "pt"
    uses_export = False  # plain text of its own (`data` in its pipeline section)
    config_cls = PTStageConfig
    help = "PT：在领域纯文本上用 LoRA 继续预训练"

    def data_kind(self, cfg) -> None:
        return None  # plain text, not an export file

    def input_files(self, cfg: PTStageConfig) -> list[Path]:
        return text_files(cfg.data)

    def load_data(self, cfg: PTStageConfig) -> StageData:
        docs, report = read_documents(text_files(cfg.data))
        if report["unusable_rows"] and cfg.bad_rows == "refuse":
            bad = report["unusable_rows"]
            shown = "；".join(f"{b['file']} 第 {b['line']} 行：{b['why']}" for b in bad[:data_mod.SHOWN_BAD_ROWS])
            raise DataError(f"{len(bad)} 行无法使用（{shown}）；修正数据或用 --bad-rows skip 跳过并计数")
        if not docs:
            raise DataError(f"data: {cfg.data} 里没有任何文本（数据集为空）")

        from mvp.model.loader import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(cfg.model)[0])
        rows, short = windows(docs, tokenizer, cfg.max_length, cfg.min_chars)
        if not rows:
            raise DataError(f"data: 所有文档都短于 min_chars={cfg.min_chars} 个字符，没有可训练的文本")
        if cfg.max_samples is not None:
            rows = rows[:cfg.max_samples]
        log(self.name, f"文档 {len(docs)}（过短 {short}），训练窗口 {len(rows)}")
        info = {**report, "documents": len(docs), "too_short": short, "windows": len(rows),
                "windows_used": len(rows)}
        return StageData(rows, [], info)

    def make_trainer(self, cfg: PTStageConfig, loaded, peft_config, data: StageData, callbacks: list):
        return lm_trainer(cfg, loaded, peft_config, data, callbacks, plain_loss=cfg.plain_loss,
                          dataset_text_field="text", completion_only_loss=False)


STAGE = PTStage()
run = STAGE.run
digest = STAGE.digest


def main(argv=None) -> int:
    return main_for(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
