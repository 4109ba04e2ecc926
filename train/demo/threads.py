"""The thread-count tuner of the demo build: on a shared 2-core machine one torch thread can be many
times faster than two, on an idle one slower; `ThreadTuner` times both now and then during training and
keeps the faster. Used by `train.demo.build` (`python -m train.demo`) through its training callback.
"""

from __future__ import annotations


class ThreadTuner:
    """Chooses the faster torch thread count during training by timing a few steps of each now and then.

    On our 2-core machines shared with other jobs, a step with 2 threads took 8x longer than with 1
    (the OpenMP threads wait for each other whenever one is descheduled); on an idle machine 2 threads
    are faster. Every `every_s` seconds the other count runs `probe` steps, right after `probe` steps of
    the current one, and the faster (by median) is kept. On this stack the weights came out bitwise the
    same with 1 and 2 threads, so tuning does not break determinism.
    """

    def __init__(self, candidates: list[int], every_s: float = 45.0, probe: int = 3):
        self.candidates = list(dict.fromkeys(candidates))
        self.best = self.candidates[0]
        self.every_s, self.probe = every_s, probe
        self.phase: list[int] = []  # thread counts of the steps of the probe in progress
        self.times: list[tuple[int, float]] = []
        self.last_probe = None
        self.history: list[tuple[int, int]] = []  # (step, threads) at each change

    def threads_for_next_step(self, step: int, now: float) -> int:
        if len(self.candidates) < 2 or step == 0:  # the first step warms up: not timed
            return self.best
        if not self.phase and (self.last_probe is None or now - self.last_probe >= self.every_s):
            others = [c for c in self.candidates if c != self.best]
            self.phase = [self.best] * self.probe + [t for t in others for _ in range(self.probe)]
            self.times = []
            self.last_probe = now
        return self.phase[len(self.times)] if self.phase else self.best

    def record(self, threads: int, seconds: float, step: int) -> None:
        if not self.phase:
            return
        self.times.append((threads, seconds))
        if len(self.times) < len(self.phase):
            return
        medians = {
            t: sorted(s for tt, s in self.times if tt == t)[self.probe // 2]
            for t in dict.fromkeys(self.phase)
        }
        fastest = min(medians, key=medians.get)
        if fastest != self.best:
            self.best = fastest
            self.history.append((step, fastest))
        self.phase = []
