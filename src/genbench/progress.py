"""Progress of a long step (sampling, feature extraction, likelihoods): done/total and an ETA.

On a terminal (stderr is a TTY) it is a tqdm bar; anywhere else (a log file, a Slurm job, a pipe) the
same facts go out as plain log lines, one every `every_s` seconds and one at the end, so a step is
never silent for long and a log never fills with carriage returns.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("genbench")


class Progress:
    """with Progress(total, "sampling", unit="img") as p: ... p.update(k) ..."""

    def __init__(self, total: int, desc: str, unit: str = "img", every_s: float = 5.0, bar: bool | None = None):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done, self.start = 0, time.perf_counter()
        self._last = self.start
        self._bar = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """'sampling: 2500/10000 img, 41.3 img/s, eta 00:03:01'"""
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        return f"{self.desc}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, eta {eta_text}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.done and time.perf_counter() - self.start >= self.every_s:  # a long step says when it ended
            log.info("%s: %d %s in %.1f s", self.desc, self.done, self.unit, time.perf_counter() - self.start)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
