"""Progress of long work as plain log lines: done/total, rate and ETA, a line at most every ~10 s.

Every stage that can run for minutes (augment, validate, train, evaluate, compress, distill) reports
through this one helper, so a user sees the same kind of line everywhere:

    augment: back-translation, texts 0/12,414 started
    augment: back-translation, texts 1,216/12,414 (9.8%), 4.05 texts/s, ETA 46m 05s
    augment: back-translation, texts 12,414/12,414 done in 51m 10s, 4.04 texts/s

Plain lines, never carriage returns or bars: a stage's output is read in a terminal under `dvc repro`, and
line by line into the Prefect logs by `flows/orchestration/steps.py` (`run_logged` streams each line into the task's
log; a bar redrawn with `\\r` would arrive there as one line per redraw, or not at all until the end).
Lines go to stderr, flushed: stdout is for what a command outputs (`flowtune predict` writes predictions
there), and stderr reaches both the terminal and `run_logged`, which merges it into the stream it logs.

The first line comes at the start, the last at the end, and between them at most one every `every_s`
seconds (the time check is cheap, so callers may update after every item). With an unknown total the
lines say how many are done and how fast, without percentage or ETA.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Clock = Callable[[], float]
Note = str | Callable[[], str]  # a callable is only called when a line is written (e.g. a loss that syncs a GPU)
T = TypeVar("T")

EVERY_S = 10.0


def write_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Progress of one piece of work: `update`/`advance` as it goes, `finish` at the end (or use `with`).

    `what` names the work and the counted thing ("augment: back-translation, texts"); `unit` is the plural
    the rate is given in ("texts"). `done`: where a resumed piece of work starts (its rate counts only what
    this run does). `enabled=False` writes nothing (e.g. on DDP processes other than the main one)."""

    def __init__(self, what: str, total: int | None = None, unit: str = "items", *, done: int = 0,
                 every_s: float = EVERY_S, clock: Clock | None = None,
                 write: Callable[[str], None] = write_line, enabled: bool = True) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = self.initial = done
        # `time.monotonic` looked up now, not at import: a test may put a fake clock there.
        self.every_s, self.clock, self.write, self.enabled = every_s, clock or time.monotonic, write, enabled
        self.started = self.last = self.clock()
        self.finished = False
        if enabled:
            self.write(f"{what} {self._count()} started")

    def advance(self, count: int = 1, note: Note = "", force: bool = False) -> None:
        """`count` more are done."""
        self.update(self.done + count, note, force)

    def update(self, done: int, note: Note = "", force: bool = False) -> None:
        """`done` are done; a line when `every_s` has passed since the last one (or `force`)."""
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if force or now - self.last >= self.every_s:
            self.last = now
            self.write(self._line(now, note))

    def finish(self, note: Note = "") -> None:
        """The last line: how many, how long, how fast. Only once."""
        if self.finished:
            return
        self.finished = True
        if self.enabled:
            elapsed = self.clock() - self.started
            rate = self._rate(elapsed)
            speed = f", {rate_text(rate)} {self.unit}/s" if rate is not None else ""
            self.write(f"{self.what} {self._count()} done in {duration(elapsed)}{speed}{_note(note)}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is None:  # after an error, the error is the last word, not a "done" line
            self.finish()

    def _count(self) -> str:
        return f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"

    def _rate(self, elapsed: float) -> float | None:
        moved = self.done - self.initial
        return moved / elapsed if moved > 0 and elapsed > 0 else None

    def _line(self, now: float, note: Note) -> str:
        parts = [f"{self.what} {self._count()}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.1f}%)"
        rate = self._rate(now - self.started)
        if rate is not None:
            parts.append(f"{rate_text(rate)} {self.unit}/s")
            if self.total is not None:
                parts.append(f"ETA {duration(max(0, self.total - self.done) / rate)}")
        return ", ".join(parts) + _note(note)


def _note(note: Note) -> str:
    text = note() if callable(note) else note
    return f", {text}" if text else ""


def track(items: Iterable[T], what: str, total: int | None = None, unit: str = "items", **options) -> Iterator[T]:
    """Yield `items`, reporting progress as each is done; `total` defaults to len(items) when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, unit, **options) as progress:
        for item in items:
            yield item
            progress.advance()


def rate_text(rate: float) -> str:
    """Three significant digits, never an exponent: `0.167`, `4.05`, `12,345`."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def duration(seconds: float) -> str:
    """`45s`, `3m 07s`, `2h 05m`: short, and at the precision an ETA deserves."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
