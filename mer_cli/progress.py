"""Progress on stderr for the slow steps a command takes before (or instead of) its own display: a Rich bar or
spinner on a terminal, a few plain lines otherwise (a log file, CI), so a wait of seconds is never silent.

Both follow ``sys.stderr`` as it is when they write, so they show while native lines are hidden
(:func:`realtime.native_stderr.native_logs_hidden` keeps Python's stderr).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FramesProgress", "StageBars", "Steps"]

PLAIN_EVERY_S = 3.0  # a plain line at most this often while frames are made


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class FramesProgress:
    """A ``progress(done, total)`` callback for frames being made: nothing until the first call (a cached
    result shows nothing), then a transient bar on a terminal, else a line at the start, one every
    :data:`PLAIN_EVERY_S` seconds and one at the end. A context manager; :meth:`close` is safe to call twice."""

    def __init__(self, prog: str, what: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.prog, self.what = prog, what
        self._clock = clock
        self._console: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._started: float | None = None
        self._last_line = 0.0
        self._done, self._total = 0, 0

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        self._done, self._total = done, total
        if self._started is None:
            self._start(now)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
        elif now - self._last_line >= PLAIN_EVERY_S:
            self._line(f"{self.what}: {done}/{total} frames")
            self._last_line = now

    def _start(self, now: float) -> None:
        self._started = self._last_line = now
        self._console = _console()
        if self._console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"{self.prog}: {self.what}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TextColumn("frames"), TimeRemainingColumn(), console=self._console,
                                 transient=True)
            self._task = self._bar.add_task(self.what, total=self._total)
            self._bar.start()
        else:
            self._line(f"{self.what} ...")

    def _line(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._started is None:
            return
        took = self._clock() - self._started
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._line(f"{self.what}: {self._done}/{self._total} frames in {took:.1f} s")
        self._started = None

    def __enter__(self) -> FramesProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Steps:
    """Says which step of a long measurement runs, so no wait is silent: on a terminal a spinner with the step,
    its latest note and its elapsed time; else a line per step (``[2/7] offline run 1 ...``) and a line per
    note at most every :data:`PLAIN_EVERY_S` seconds. ``with steps.step(text) as note:`` around the step's work;
    ``note(detail)`` (e.g. "450 frames") says how far it is."""

    def __init__(self, prog: str, total: int, *, console: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prog, self.total = prog, total
        self._console = console if console is not None else _console()
        self._clock = clock
        self._n = 0

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[Callable[[str], None]]:
        self._n += 1
        label = f"{self.prog}: [{self._n}/{self.total}] {text}"
        if self._console.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=self._console, transient=True) as bar:
                task = bar.add_task(label, total=None)
                yield lambda detail: bar.update(task, description=f"{label}: {detail}")
            return
        print(f"{label} ...", file=sys.stderr, flush=True)
        last = self._clock()

        def note(detail: str) -> None:
            nonlocal last
            if self._clock() - last >= PLAIN_EVERY_S:
                last = self._clock()
                print(f"{label}: {detail}", file=sys.stderr, flush=True)

        yield note


class StageBars:
    """A ``report(stage, advance, total)`` callback with one transient Rich bar per stage, for the commands
    whose training and benchmark stages report that way (``advance`` 0 with a total starts the stage anew).
    A context manager: the bars show while it is entered."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<46}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=_console(), transient=True)
        self._tasks: dict[str, Any] = {}

    def __call__(self, stage: str, advance: int, total: int) -> None:
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self.progress.add_task(stage, total=total or None)
        elif advance == 0 and total:
            self.progress.reset(task, total=total)
        self.progress.update(task, advance=advance)

    def __enter__(self) -> StageBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)
