"""Terminal output of the CLI: aligned tables and a progress bar that only draws on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

# Redraw a progress bar at most this often: a terminal is not faster than the eye.
REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 28


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell; the header is underlined."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *(line(r) for r in cells[1:])])


class Progress:
    """``[#####-----] 12/40 frames 2.1/s`` on stderr; silent when stderr is not a terminal.

    Use as a context manager and call ``advance(n)``; ``total=None`` shows a counter only.
    """

    def __init__(self, label: str, total: int | None = None, *, unit: str = "", stream: TextIO | None = None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1, *, total: int | None = None) -> None:
        """Count ``n`` more units (and learn the total once it is known)."""
        self.done += n
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.enabled and now - self._drawn >= REDRAW_INTERVAL_S:
            self._drawn = now
            self.stream.write("\r" + self.render())
            self.stream.flush()

    def render(self) -> str:
        """The bar as one line of text."""
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            filled = min(BAR_WIDTH, int(BAR_WIDTH * self.done / self.total))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total}{unit} {rate:.1f}/s"
        return f"{self.label} {self.done}{unit} {rate:.1f}/s"

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self.stream.write("\r" + self.render() + "\n")
            self.stream.flush()
