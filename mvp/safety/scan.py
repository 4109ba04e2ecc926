"""Where each crisis pattern can match in a long message: a vectorised trigger-character prefilter.

What it is for: the rule layer (mvp/safety/detect.py) runs about 120 patterns. On a message of
4,000 characters a full scan by each costs about 12 ms, so in long texts a pattern runs only in
windows around its trigger characters (`rules.required_chars`: every match contains one of them).
`TriggerIndex.windows(norm)` finds, for ALL patterns at once with numpy, the trigger positions and
merges them into windows [p - width, p + width + margin] (closer than MERGE_GAP: one window) (width = the pattern's longest match),
without a Python loop over characters. Every match of a pattern lies in one of its windows, so the
matches are the same as a full scan's (tests/test_safety.py checks prefilter on and off agree on
long texts); a pattern with no trigger set, no bounded width, or triggers so dense that windows
would cover the text is scanned whole (`None`).

    index = TriggerIndex([(regex, trigger, width), ...], margin=16)
    plan = index.windows(norm)        # per pattern: None (scan all), [] (cannot match) or [(lo, hi), ...]
"""
from __future__ import annotations

import re
from typing import Iterator, Sequence

import numpy as np

MERGE_GAP = 48        # windows closer than this are scanned as one (a scan call costs about as much as 40 chars)


class TriggerIndex:
    """Trigger characters of a list of patterns, as a lookup table and a (characters x patterns) matrix."""

    def __init__(self, items: Sequence[tuple[re.Pattern, frozenset[str] | None, int]], margin: int,
                 max_width: int) -> None:
        self.margin = margin
        self.n = len(items)
        chars = sorted({c for _, trig, _ in items if trig for c in trig})
        top = max((ord(c) for c in chars), default=0) + 2
        self._none = len(chars)                        # row of a character that triggers nothing
        self._lut = np.full(top, self._none, dtype=np.int32)
        self._lut[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)
        self._top = top - 1                            # codes at or above this map to the "none" slot
        self._lut[self._top] = self._none
        matrix = np.zeros((len(chars) + 1, self.n), dtype=bool)
        row = {c: i for i, c in enumerate(chars)}
        self._whole = np.zeros(self.n, dtype=bool)     # always scanned whole
        self._width = np.zeros(self.n, dtype=np.int64)
        for j, (_, trig, width) in enumerate(items):
            if trig is None or width > max_width:
                self._whole[j] = True
                continue
            self._width[j] = width
            matrix[[row[c] for c in trig], j] = True
        self._matrix = matrix

    def windows(self, norm: str) -> list[list[tuple[int, int]] | None]:
        """Per pattern: None (scan the whole text), or its merged windows (possibly none)."""
        codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32)
        rows = self._lut[np.minimum(codes, self._top)]
        where = np.flatnonzero(rows != self._none)
        plan: list[list[tuple[int, int]] | None] = [None if w else [] for w in self._whole]
        if not len(where):
            return plan
        pattern, k = np.nonzero(self._matrix[rows[where]].T)   # pattern-major, positions ascending
        pos = where[k]
        width = self._width[pattern]
        counts = np.bincount(pattern, minlength=self.n)
        # a new window starts at a new pattern or where the gap exceeds both reaches and the margin
        new = np.ones(len(pos), dtype=bool)
        new[1:] = (pattern[1:] != pattern[:-1]) | (pos[1:] - pos[:-1] > 2 * width[1:] + self.margin + MERGE_GAP)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(pos)) - 1
        lo = np.maximum(pos[starts] - width[starts], 0).tolist()
        hi = np.minimum(pos[ends] + width[ends] + self.margin, len(norm)).tolist()
        owner = pattern[starts].tolist()
        dense = (counts * 2 * (self._width + self.margin) >= len(norm)).tolist()
        for j, a, b in zip(owner, lo, hi):
            windows = plan[j]
            if windows is not None:
                if dense[j]:
                    plan[j] = None                     # dense: one scan is cheaper
                else:
                    windows.append((a, b))
        return plan


def window_matches(regex: re.Pattern, norm: str, windows: list[tuple[int, int]] | None,
                   margin: int) -> Iterator[re.Match]:
    """Matches of `regex` in `norm`: all of them (windows None) or those found in the windows."""
    if windows is None:
        yield from regex.finditer(norm)
        return
    size = len(norm)
    for lo, hi in windows:
        for m in regex.finditer(norm, lo, hi):          # pos/endpos: lookbehinds still see context
            # a match ending inside the margin may be an artefact of endpos ($, lookaheads)
            if m.end() <= hi - margin or hi == size:
                yield m
