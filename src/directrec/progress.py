"""Signs of life for every step that can take more than a moment.

`Steps` counts through a known amount of work (items encoded, users evaluated, epochs of
the RQ-VAE); `stage` wraps one opaque step (a closed-form fit). On a terminal both draw a
rich bar or spinner on stderr with the elapsed time (and an ETA where the total is known);
elsewhere (a log file, CI, a pipe) they write one stderr line when the step starts and one
when it ends, plus, for a counted step, a progress line at most every `LOG_EVERY_S`
seconds. Off, they cost nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOG_EVERY_S = 5.0  # on a log, the soonest a counted step reports progress again


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def terminal_bar(
    desc: str, total: int, done: int = 0, console: Any = None, start: bool = True
) -> tuple[Any, Any]:
    """A rich bar (started unless `start` is False) on stderr (description, bar, done/total, elapsed, ETA, and an
    `info` field the caller updates) and its task: every bar directrec draws looks alike."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console or Console(stderr=True),
    )
    task = bar.add_task(desc, total=total, completed=done, info="")
    if start:
        bar.start()
    return bar, task


class Steps:
    """A counted step: `advance(n)` as work gets done; `close()` (or the `with` block's end)
    says how long it took."""

    def __init__(self, desc: str, total: int, on: bool = True, unit: str = "") -> None:
        self.desc, self.total, self.on, self.unit = desc, max(int(total), 0), on, unit
        self.done, self.t0, self._last_log = 0, time.perf_counter(), 0.0
        self._bar: Any = None
        if not on:
            return
        if sys.stderr.isatty():
            self._bar, self._task = terminal_bar(desc, self.total)
        else:
            _log(f"{desc}: {self.total:,} {unit}".rstrip() + " …")

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        if not self.on:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=info)
            return
        now = time.perf_counter() - self.t0
        if now - self._last_log >= LOG_EVERY_S and self.done < self.total:
            self._last_log = now
            eta = now / max(self.done, 1) * (self.total - self.done)
            extra = f"  {info}" if info else ""
            _log(f"{self.desc}: {self.done:,}/{self.total:,}{extra}  {now:.0f}s, ETA {eta:.0f}s")

    def close(self, info: str = "") -> None:
        if not self.on:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self.on = False
            return
        extra = f" ({info})" if info else ""
        _log(f"{self.desc}: done in {time.perf_counter() - self.t0:.1f}s{extra}")
        self.on = False

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def stage(desc: str, on: bool = True) -> Iterator[None]:
    """One opaque step: a spinner with the elapsed time on a terminal, a start and an end
    line on a log."""
    if not on:
        yield
        return
    t0 = time.perf_counter()
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status(f"{desc} …"):
            yield
        console.print(f"{desc}: done in {time.perf_counter() - t0:.1f}s", highlight=False)
        return
    _log(f"{desc} …")
    yield
    _log(f"{desc}: done in {time.perf_counter() - t0:.1f}s")
