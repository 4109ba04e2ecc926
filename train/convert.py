"""Convert dialogue datasets between formats, and measure compact vs per-turn training data.

    python -m train.convert --from bianque --to messages IN.jsonl OUT.jsonl --merge-prefixes
    python -m train.convert --from messages --to sharegpt IN.jsonl OUT.json
    python -m train.convert --from sharegpt --to messages IN.json OUT.jsonl
    python -m train.convert --from messages --to bianque IN.jsonl OUT.jsonl      # one row per reply
    python -m train.convert --from messages --to alpaca IN.jsonl OUT.json --expand per-turn
    python -m train.convert stats [--json bench/results/convert_stats.json]      # bundled dialogues

Formats (see `train.formats`): `messages` (JSONL of `{"messages": [...]}`, the bundled dialogues
too), `sharegpt` (LLaMA-Factory), `bianque` (`input`/`target`, SMILE-style instruction in `input`),
`alpaca` (LLaMA-Factory, with `history`). JSON-list or JSONL input is detected from the content;
sharegpt and alpaca are written as a JSON list (LLaMA-Factory's habit) unless OUT ends in `.jsonl`.

`--expand per-turn` writes one sample per counsellor turn, each repeating the whole history (what
BianQue trains on); without it each conversation stays one sample with every counsellor turn in it.
`bianque` holds a single target per row, so it is always written per turn. `--merge-prefixes` undoes
an expansion on reading: a row whose dialogue is a prefix of another row's is dropped (and counted).

Role order is validated on every row (an optional system message, then user/assistant alternating;
the counsellor may open). A row that breaks it, or that the output format cannot hold, is skipped and
COUNTED: a JSON summary goes to stdout, nothing is dropped silently; `--strict` makes any skip exit 1.
Client messages after the last reply are trimmed (nothing to supervise) and counted too.

`stats` tokenizes the bundled dialogues (with the demo model's tokenizer when models/demo exists,
else a small one trained here with `train.demo.tiny_lm.train_tokenizer`) and reports, per source and in
total: samples, total tokens and supervised tokens for one compact sample per conversation vs the
per-turn expansion, with the stage instruction of the first stage as system prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from train import formats
from train.formats import FormatError

FORMATS = ("messages", "sharegpt", "bianque", "alpaca")
EXPAND_CHOICES = ("auto", "none", "per-turn")
TOKENIZER_VOCAB = 4000  # same size as the demo model's tokenizer (train.demo.build)
TOKENIZER_DIALOGUES = 300  # enough text for a stable BPE; training on all 1,100 takes ~15 s
VERIFY_DIALOGUES = 20  # per-turn counts checked against real per-sample tokenization
STATS_SYSTEM_NOTE = "system prompt: the first stage's instruction from config/stages.yaml"


class ConvertError(Exception):
    """A user error (bad path, unreadable file, impossible option): printed without a traceback."""


# -- readers and writers --------------------------------------------------------------------------
def _read_messages_row(row: dict) -> list[dict]:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list):
        raise FormatError("missing_messages", "需要 messages 列表")
    if not all(isinstance(m, dict) and set(m) >= {"role", "content"} for m in messages):
        raise FormatError("bad_message", "每条消息需要 role 和 content")
    return [formats.message(m["role"], m["content"]) for m in messages]


READERS: dict[str, Callable[[dict], list[dict]]] = {
    "messages": _read_messages_row,
    "sharegpt": formats.from_sharegpt,
    "bianque": formats.from_bianque,
    "alpaca": formats.from_alpaca,
}
WRITERS: dict[str, Callable[[list[dict]], dict]] = {
    "messages": formats.trl_sft_row,
    "sharegpt": formats.to_sharegpt,
    "bianque": formats.to_bianque,
    "alpaca": formats.to_alpaca,
}
JSON_LIST_OUTPUTS = ("sharegpt", "alpaca")


def merge_prefixes(conversations: list[list[dict]]) -> tuple[list[list[dict]], int]:
    """Keep conversations that are not a prefix of another one (undoes a per-turn expansion)."""
    keys = [tuple((m["role"], m["content"]) for m in c) for c in conversations]
    prefixes = set()
    for key in keys:
        for end in range(1, len(key)):
            prefixes.add(key[:end])
    kept, seen = [], set()
    for conversation, key in zip(conversations, keys):
        if key in prefixes or key in seen:
            continue
        seen.add(key)
        kept.append(conversation)
    return kept, len(conversations) - len(kept)


def convert_rows(
    rows: Iterable[Any],
    source: str,
    target: str,
    expand: str = "auto",
    merge: bool = False,
) -> tuple[list[dict], dict]:
    """Convert parsed rows; returns (output rows, summary with every skip counted by reason)."""
    if expand == "auto":
        expand = "per-turn" if target == "bianque" else "none"
    if target == "bianque" and expand != "per-turn":
        raise ConvertError("bianque 格式每行只有一个 target：请用 --expand per-turn / one target per row")
    read, skipped, notes = 0, Counter(), Counter()
    conversations = []
    for row in rows:
        read += 1
        try:
            messages = READERS[source](row)
        except FormatError as exc:
            skipped[f"unreadable:{exc.reason}"] += 1
            continue
        problem = formats.role_problem(messages)
        if problem:
            skipped[f"role_order:{problem}"] += 1
            continue
        conversations.append(messages)
    if merge:
        conversations, merged = merge_prefixes(conversations)
        notes["merged_prefix_rows"] = merged
    out = []
    for messages in conversations:
        if target != "messages":
            trimmed = formats.trim_trailing_user(messages)
            if len(trimmed) != len(messages):
                notes["trailing_user_trimmed"] += 1
            messages = trimmed
            dialogue = formats.split_system(messages)[1]
            if target in ("sharegpt", "alpaca") and dialogue and dialogue[0]["role"] == formats.ASSISTANT:
                notes["leading_assistant_folded_into_system"] += 1
        samples = formats.expand_per_turn(messages) if expand == "per-turn" else [messages]
        if not samples:
            skipped["no_assistant_turn"] += 1
            continue
        for sample in samples:
            try:
                out.append(WRITERS[target](sample))
            except FormatError as exc:
                skipped[f"unrepresentable:{exc.reason}"] += 1
    summary = {
        "from": source, "to": target, "expand": expand, "rows_read": read,
        "conversations": len(conversations), "rows_written": len(out),
        "skipped": dict(sorted(skipped.items())), "skipped_total": sum(skipped.values()),
        "notes": dict(sorted(notes.items())),
    }
    return out, summary


def write_rows_atomic(path: Path, rows: list[dict], as_json_list: bool) -> None:
    """Write to a temporary file beside `path`, then rename (no half-written output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if as_json_list:
            formats.write_json_list(Path(tmp), rows)
        else:
            formats.write_jsonl(Path(tmp), rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert_file(src: Path, dst: Path, source: str, target: str, expand: str = "auto",
                 merge: bool = False) -> dict:
    """Read `src` in format `source`, write `dst` in format `target`; return the summary."""
    if not src.is_file():
        raise ConvertError(f"找不到输入文件 / input not found: {src}")
    if src.resolve() == dst.resolve():
        raise ConvertError("输入和输出是同一个文件 / IN and OUT are the same file")
    try:
        rows = formats.read_rows(src)
    except FormatError as exc:
        raise ConvertError(f"无法读取 / cannot read {src}: {exc}") from None
    if not isinstance(rows, list):
        raise ConvertError(f"{src}: JSON 顶层必须是列表 / top level must be a list")
    out, summary = convert_rows(rows, source, target, expand, merge)
    as_list = target in JSON_LIST_OUTPUTS and dst.suffix != ".jsonl"
    write_rows_atomic(dst, out, as_list)
    summary["output"] = str(dst)
    return summary


# -- compact vs per-turn statistics ---------------------------------------------------------------
def load_stats_tokenizer(dialogues: Sequence[dict], model_dir: Path | None = None):
    """(tokenizer, description): the demo model's when built, else a small BPE trained here."""
    from train.demo import tiny_lm

    model_dir = model_dir or tiny_lm.REPO_ROOT / "models" / "demo"
    if (model_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir), f"demo model tokenizer ({model_dir})"
    sample = list(dialogues[:TOKENIZER_DIALOGUES])
    tok = tiny_lm.train_tokenizer(tiny_lm.dialogue_texts(sample), vocab_size=TOKENIZER_VOCAB)
    return tok, (f"BPE trained here with train.demo.tiny_lm.train_tokenizer (vocab {TOKENIZER_VOCAB}, "
                 f"{len(sample)} dialogues; models/demo not built)")


def _assistant_spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, flag in enumerate(list(mask) + [0]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i))
            start = None
    return spans


def dialogue_sizes(tokenizer, messages: list[dict]) -> dict:
    """Token sizes of one conversation: compact (one sample) and per-turn (one per reply).

    One tokenization of the whole conversation: ChatML's special tokens separate the messages, so
    a per-turn sample (history + reply) is exactly the compact sequence up to the end of that reply.
    """
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    spans = _assistant_spans(enc["assistant_masks"])
    return {
        "compact_tokens": len(enc["input_ids"]),
        "supervised_tokens": sum(end - start for start, end in spans),
        "per_turn_samples": len(spans),
        "per_turn_tokens": sum(end for _, end in spans),
    }


def per_turn_tokens_direct(tokenizer, messages: list[dict]) -> int:
    """Per-turn total computed the slow way (one tokenization per sample), to check the fast one."""
    total = 0
    for sample in formats.expand_per_turn(messages):
        prompt = tokenizer.apply_chat_template(sample[:-1], tokenize=True, return_dict=False,
                                               add_generation_prompt=True)
        completion = tokenizer.encode(sample[-1]["content"] + tokenizer.eos_token, add_special_tokens=False)
        total += len(prompt) + len(completion)
    return total


def expansion_stats(dialogues: Sequence[dict], tokenizer, system: str) -> dict:
    """Compact vs per-turn sizes per source and overall; role-order violations counted, not used."""
    by_source: dict[str, Counter] = {}
    violations: Counter = Counter()
    mismatches = checked = 0
    for dialogue in dialogues:
        messages = formats.trim_trailing_user(dialogue["messages"])
        problem = formats.role_problem(messages)
        source = dialogue.get("source", "unknown")
        if problem or not messages:
            violations[f"{source}:{problem or 'no_assistant_turn'}"] += 1
            continue
        messages = formats.with_system(system, messages)
        sizes = dialogue_sizes(tokenizer, messages)
        if checked < VERIFY_DIALOGUES:
            checked += 1
            mismatches += per_turn_tokens_direct(tokenizer, messages) != sizes["per_turn_tokens"]
        counter = by_source.setdefault(source, Counter())
        counter.update(sizes)
        counter["conversations"] += 1
    by_source["all"] = sum(by_source.values(), Counter())
    table = {}
    for source, c in by_source.items():
        table[source] = {
            "conversations": c["conversations"],
            "compact_samples": c["conversations"],
            "compact_tokens": c["compact_tokens"],
            "per_turn_samples": c["per_turn_samples"],
            "per_turn_tokens": c["per_turn_tokens"],
            "supervised_tokens": c["supervised_tokens"],
            "per_turn_over_compact_tokens": round(c["per_turn_tokens"] / max(1, c["compact_tokens"]), 2),
        }
    return {"sources": table, "role_order_violations": dict(violations),
            "per_turn_check": {"dialogues_checked": checked, "mismatches": mismatches}}


def run_stats(json_out: Path | None = None, model_dir: Path | None = None) -> dict:
    from train.demo import tiny_lm
    from mvp.counsel.stages import load_stages

    started = time.perf_counter()
    dialogues = list(tiny_lm.iter_dialogues())
    tokenizer, described = load_stats_tokenizer(dialogues, model_dir)
    result = expansion_stats(dialogues, tokenizer, load_stages().default.instruction)
    result.update(tokenizer=described, system_prompt=STATS_SYSTEM_NOTE,
                  seconds=round(time.perf_counter() - started, 1))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        formats.write_json(json_out, result)
    return result


def format_stats(result: dict) -> str:
    header = ("source", "convs", "compact tok", "per-turn samples", "per-turn tok", "supervised tok", "ratio")
    lines = ["{:<10} {:>6} {:>12} {:>16} {:>13} {:>15} {:>6}".format(*header)]
    for source, row in result["sources"].items():
        lines.append("{:<10} {:>6} {:>12} {:>16} {:>13} {:>15} {:>6}".format(
            source, row["conversations"], row["compact_tokens"], row["per_turn_samples"],
            row["per_turn_tokens"], row["supervised_tokens"], row["per_turn_over_compact_tokens"]))
    lines.append(f"tokenizer: {result['tokenizer']}; {result['system_prompt']}")
    lines.append(f"role-order violations (skipped): {result['role_order_violations'] or 'none'}; "
                 f"per-turn check: {result['per_turn_check']}")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.convert",
        description="Convert dialogue datasets between formats (messages, sharegpt, bianque, alpaca), "
        "or report compact vs per-turn sizes of the bundled dialogues (`stats`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="IN OUT",
                        help="input and output files, or the single word `stats`")
    parser.add_argument("--from", dest="source", choices=FORMATS, help="format of IN")
    parser.add_argument("--to", dest="target", choices=FORMATS, help="format to write OUT in")
    parser.add_argument("--expand", choices=EXPAND_CHOICES, default="auto",
                        help="per-turn: one sample per counsellor turn with the whole history; none: "
                        "one sample per conversation; auto (default): per-turn for bianque, else none")
    parser.add_argument("--merge-prefixes", action="store_true",
                        help="drop input rows whose dialogue is a prefix of another row's "
                        "(turns per-turn BianQue data back into whole conversations)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any row was skipped")
    parser.add_argument("--stats", action="store_true",
                        help="report compact vs per-turn sizes on the bundled dialogues (same as `stats`)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="with stats: also write the figures here")
    parser.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="with stats: tokenizer folder to use (default: models/demo when built)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    stats = args.stats or args.paths == ["stats"]
    try:
        if stats:
            if args.paths not in ([], ["stats"]):
                raise ConvertError("stats 不接受输入输出文件 / stats takes no IN OUT")
            print(format_stats(run_stats(args.json, args.model_dir)))
            return 0
        if len(args.paths) != 2 or not args.source or not args.target:
            raise ConvertError("需要 --from、--to 以及 IN OUT 两个路径 / need --from, --to, IN and OUT")
        summary = convert_file(Path(args.paths[0]), Path(args.paths[1]), args.source, args.target,
                               args.expand, args.merge_prefixes)
    except ConvertError as exc:
        print(f"错误 / error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    if summary["skipped_total"]:
        print(f"注意 / note: {summary['skipped_total']} 行未转换（原因见 skipped）/ rows skipped, see "
              "`skipped`", file=sys.stderr)
    return 1 if args.strict and summary["skipped_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
