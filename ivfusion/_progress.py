"""A minimal progress bar for the command line (no third-party dependency).

On a terminal it redraws one line; otherwise (logs, CI) it prints a line at most every
``log_every`` seconds and at the end, so logs stay short.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class ProgressBar:
    """``with ProgressBar(total, "fusing") as bar: bar.update(1, loss=0.12)``."""

    def __init__(
        self,
        total: Optional[int],
        desc: str = "",
        *,
        stream: Optional[TextIO] = None,
        width: int = 28,
        log_every: float = 10.0,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.log_every = log_every
        self.enabled = enabled
        self.count = 0
        self.postfix = ""
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(self.count / self.total, 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "." * (self.width - filled)
            eta = (self.total - self.count) / rate if rate > 0 else float("nan")
            core = f"{self.desc} [{bar}] {self.count}/{self.total} {rate:.2f}/s eta {eta:.0f}s"
        else:
            core = f"{self.desc} {self.count} {rate:.2f}/s"
        return f"{core} {self.postfix}".rstrip()

    def update(self, n: int = 1, **postfix: object) -> None:
        """Advance by ``n``; keyword values are shown after the bar (floats with 4 significant digits)."""
        self.count += n
        if postfix:
            self.postfix = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items()
            )
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.1 or self.count == self.total:
                self.stream.write("\r" + self._line() + "\033[K")
                self.stream.flush()
                self._last_draw = now
        elif now - self._last_draw >= self.log_every:
            self.stream.write(self._line() + "\n")
            self.stream.flush()
            self._last_draw = now

    def close(self) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r" + self._line() + "\033[K\n") if self._tty else self._line() + "\n")
        self.stream.flush()
        self.enabled = False
