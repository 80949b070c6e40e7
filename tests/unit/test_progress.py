"""tasks/progress.py: the progress lines every long stage writes (a fake clock, lines collected in a list)."""

from __future__ import annotations

import pytest

from tasks.progress import Progress, duration, rate_text, track


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def reporter(clock: Clock, lines: list[str], total: int | None = 100, **options) -> Progress:
    return Progress("augment: back-translation, texts", total, "texts", clock=clock, write=lines.append, **options)


def test_a_first_line_at_the_start_then_at_most_one_every_ten_seconds(clock: Clock) -> None:
    lines: list[str] = []
    progress = reporter(clock, lines)
    assert lines == ["augment: back-translation, texts 0/100 started"]
    for _ in range(40):  # one item every 0.5 s: 20 s in all
        clock.now += 0.5
        progress.advance()
    assert len(lines) == 3  # the start, then after 10 s and after 20 s, not one per item
    assert lines[1] == "augment: back-translation, texts 20/100 (20.0%), 2 texts/s, ETA 40s"
    assert lines[2] == "augment: back-translation, texts 40/100 (40.0%), 2 texts/s, ETA 30s"


def test_the_last_line_says_how_many_how_long_and_how_fast_once(clock: Clock) -> None:
    lines: list[str] = []
    with reporter(clock, lines) as progress:
        clock.now += 125
        progress.update(100)
    progress.finish()  # a second finish writes nothing
    assert lines[-1] == "augment: back-translation, texts 100/100 done in 2m 05s, 0.8 texts/s"
    assert len(lines) == 3


def test_the_eta_follows_the_rate_so_far(clock: Clock) -> None:
    lines: list[str] = []
    progress = reporter(clock, lines, total=12_414)
    clock.now += 300
    progress.update(1_200)
    assert lines[-1] == "augment: back-translation, texts 1,200/12,414 (9.7%), 4 texts/s, ETA 46m 44s"


def test_an_unknown_total_reports_count_and_rate_without_eta(clock: Clock) -> None:
    lines: list[str] = []
    progress = reporter(clock, lines, total=None)
    clock.now += 10
    progress.update(50_000)
    progress.finish()
    assert lines == ["augment: back-translation, texts 0 started",
                     "augment: back-translation, texts 50,000, 5,000 texts/s",
                     "augment: back-translation, texts 50,000 done in 10s, 5,000 texts/s"]


def test_no_rate_before_anything_is_done_and_a_lazy_note_only_when_written(clock: Clock) -> None:
    lines: list[str] = []
    calls: list[int] = []

    def loss() -> str:
        calls.append(1)
        return "loss 0.5000"

    progress = reporter(clock, lines)
    clock.now += 11
    progress.update(0, loss)
    assert lines[-1] == "augment: back-translation, texts 0/100 (0.0%), loss 0.5000"
    progress.advance(1, loss)  # no line due: the note is not computed
    assert calls == [1]
    progress.advance(1, loss, force=True)
    assert len(calls) == 2 and lines[-1].endswith(", loss 0.5000")


def test_a_resumed_run_counts_its_rate_from_where_it_resumed(clock: Clock) -> None:
    lines: list[str] = []
    progress = reporter(clock, lines, done=50)
    assert lines == ["augment: back-translation, texts 50/100 started"]
    clock.now += 10
    progress.advance(10)
    assert lines[-1] == "augment: back-translation, texts 60/100 (60.0%), 1 texts/s, ETA 40s"


def test_disabled_writes_nothing_and_an_error_ends_without_a_done_line(clock: Clock) -> None:
    lines: list[str] = []
    progress = reporter(clock, lines, enabled=False)
    clock.now += 60
    progress.advance(10, force=True)
    progress.finish()
    assert lines == []
    with pytest.raises(RuntimeError), reporter(clock, lines):
        raise RuntimeError("boom")
    assert lines == ["augment: back-translation, texts 0/100 started"]


def test_track_counts_each_item_as_done(clock: Clock) -> None:
    lines: list[str] = []
    seen = []
    for item in track(["a", "b", "c"], "validate: tables", unit="tables", clock=clock, write=lines.append):
        clock.now += 6
        seen.append(item)
    assert seen == ["a", "b", "c"]
    # the line after 12 s counts the two tables done before the third started
    assert lines == ["validate: tables 0/3 started", "validate: tables 2/3 (66.7%), 0.167 tables/s, ETA 6s",
                     "validate: tables 3/3 done in 18s, 0.167 tables/s"]


def test_lines_never_hold_a_carriage_return(clock: Clock) -> None:
    lines: list[str] = []
    with reporter(clock, lines) as progress:
        for _ in range(100):
            clock.now += 1
            progress.advance()
    assert lines and not any("\r" in line or "\n" in line for line in lines)


@pytest.mark.parametrize(("rate", "shown"), [(0.1666, "0.167"), (4.049, "4.05"), (99.5, "99.5"), (12345.6, "12,346")])
def test_rates_have_three_digits_and_no_exponent(rate: float, shown: str) -> None:
    assert rate_text(rate) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0s"), (59.4, "59s"), (60, "1m 00s"), (3599, "59m 59s"),
                                                (3600, "1h 00m"), (7500, "2h 05m")])
def test_durations_are_short(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


CHILD = """
import pathlib, sys, time
from tasks.progress import Progress
gate = pathlib.Path(sys.argv[1])
progress = Progress("stage: work, items", 3, "items", every_s=0)
deadline = time.monotonic() + 60
while not gate.exists() and time.monotonic() < deadline:  # the parent opens the gate on reading the first line
    time.sleep(0.05)
progress.advance(3)
progress.finish()
print("gate opened" if gate.exists() else "gate never opened")
"""


def test_lines_reach_the_prefect_log_one_by_one_while_the_stage_runs(tmp_path, monkeypatch) -> None:
    """A stage under `flows.orchestration.steps.run_logged` (how a flow runs `dvc repro`): each progress line becomes
    its own log record as soon as it is written, not when the stage ends (stderr flushed, no carriage returns)."""
    import logging
    import sys

    from flows.orchestration import steps
    from tests.helpers import ROOT

    gate, records = tmp_path / "gate", []

    class Opener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())
            if record.getMessage().endswith("started"):
                gate.touch()

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # A logger of this test's own, in place of the Prefect run's: another test may have reconfigured logging.
    logger = logging.Logger("progress-test", logging.INFO)
    logger.addHandler(Opener())
    monkeypatch.setattr(steps, "run_logger", lambda: logger)
    steps.run_logged([sys.executable, "-c", CHILD, str(gate)], "stage 'work'", timeout_s=120)
    lines = records[1:]  # after the "$ command" line
    assert lines[0] == "stage: work, items 0/3 started"
    assert lines[1].startswith("stage: work, items 3/3 (100.0%), ") and "ETA 0s" in lines[1]
    assert lines[2].startswith("stage: work, items 3/3 done in ")
    assert lines[3] == "gate opened"


def test_back_translation_reports_the_distinct_texts_as_batches_come_back(monkeypatch, capsys) -> None:
    """The hours-long part of augment: counted in distinct texts (a repeated one is translated once), a line
    when ~10 s have passed since the last, and the last line on stderr only (stdout stays the stage's)."""
    from tasks import progress
    from tasks.augmenters.backtranslation import BackTranslation
    from tasks.kinds.ner.records import NerRecord

    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)

    class SlowTranslator:  # each batch "takes" 6 s of the fake clock
        name = "slow-fake"

        def round_trip(self, texts):
            clock.now += 6
            return list(texts)

    rows = [NerRecord(f"r{i}", (f"word{i}", "John"), ("O", "B-per"), {}) for i in range(10)]
    rows.append(NerRecord("again", ("word0", "John"), ("O", "B-per"), {}))  # a text already there
    BackTranslation(SlowTranslator(), batch_size=2).augment(rows)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["augment: backtranslation, texts 0/10 started",
                                "augment: backtranslation, texts 4/10 (40.0%), 0.333 texts/s, ETA 18s",
                                "augment: backtranslation, texts 8/10 (80.0%), 0.333 texts/s, ETA 6s",
                                "augment: backtranslation, texts 10/10 done in 30s, 0.333 texts/s"]
