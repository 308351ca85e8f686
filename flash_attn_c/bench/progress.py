"""Progress bar for the benchmark sweep: tqdm when installed, else a small one of our own."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


class SimpleProgress:
    """Minimal tqdm-like bar on a stream: ``[#####.....] 12/40 30% 0:12 label``.

    On a terminal it redraws one line; otherwise it prints a line per 10% step so logs stay short.
    """

    def __init__(self, total: int, desc: str = "", stream: Optional[TextIO] = None,
                 width: int = 28) -> None:
        self.total = max(1, total)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.n = 0
        self.label = ""
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.label = text
        if self.tty and refresh:
            self._draw()

    def update(self, n: int = 1) -> None:
        self.n += n
        decile = (10 * self.n) // self.total
        if self.tty or decile != self._last_decile:
            self._last_decile = decile
            self._draw()

    def _draw(self) -> None:
        frac = min(1.0, self.n / self.total)
        filled = int(frac * self.width)
        elapsed = int(time.perf_counter() - self.start)
        text = (f"{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] {self.n}/{self.total} "
                f"{frac:4.0%} {elapsed // 60}:{elapsed % 60:02d} {self.label}")
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class _NoProgress:
    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(total: int, desc: str, enabled: bool = True) -> Any:
    """A progress object with update(n), set_postfix_str(text) and close()."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except Exception:
        return SimpleProgress(total, desc)
    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    # Off a terminal (logs, CI) redraw at most every 10 s so the log stays readable.
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True,
                mininterval=0.2 if tty else 10.0)
