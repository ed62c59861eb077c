"""Progress for long work: a bar on a terminal, a line every few seconds otherwise (logs, CI).

Both go to stderr, so piped output stays clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Progress", "progress_bar"]

T = TypeVar("T")


class Progress:
    """``update(n)``, ``set_postfix(**values)``, ``close()``: tqdm's interface, so callers need not
    know which of the two they got. Off the terminal it prints ``desc: i/N (p%), values`` at most
    every `every_s` seconds and once at the end."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        every_s: float = 10.0,
        stream=None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.n, self.every_s = total, desc, unit, initial, every_s
        self.postfix: dict[str, Any] = {}
        self._bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=self.stream)
        self._last = time.monotonic()
        self._closed = False
        self._printed: str | None = None  # the last line printed: the closing line is not printed twice

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.every_s:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        line = f"{self.desc}: {done}{pct}{', ' + extra if extra else ''}"
        if line != self._printed:
            print(line, file=self.stream, flush=True)
            self._printed = line


def progress_bar(items: Iterable[T], desc: str, unit: str = "it", every_s: float = 10.0) -> Iterator[T]:
    """Iterate `items` with a :class:`Progress`."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    progress = Progress(total, desc, unit, every_s=every_s)
    try:
        for item in items:
            yield item
            progress.update(1)
    finally:
        progress.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
