"""A small progress bar on stderr: count, rate and ETA; one line per update on a terminal, sparse in logs."""

from __future__ import annotations

import sys
import time


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, desc: str = "", unit: str = "frames", enabled: bool = True,
                 stream=None):
        self.total = total or None
        self.desc, self.unit = desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.postfix = ""

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.start
        return self.n / dt if dt > 0 else 0.0

    def update(self, n: int = 1, postfix: str = "") -> None:
        self.n += n
        self.postfix = postfix or self.postfix
        now = time.monotonic()
        if now - self._last >= (0.2 if self.tty else 10.0):
            self._last = now
            self._draw()

    def _draw(self, end: str = "") -> None:
        if not self.enabled:
            return
        rate = self.rate
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 24)
            eta = _fmt_time((self.total - self.n) / rate) if rate > 0 else "?"
            text = f"{self.desc} |{bar:<24}| {self.n}/{self.total} {rate:.2f} {self.unit}/s ETA {eta}"
        else:
            text = f"{self.desc} {self.n} {self.unit} {rate:.2f} {self.unit}/s"
        if self.postfix:
            text += f" {self.postfix}"
        self.stream.write(("\r" + text + "\x1b[K" if self.tty else text + "\n") + end)
        self.stream.flush()

    def close(self) -> None:
        self._draw("\n" if self.tty else "")
