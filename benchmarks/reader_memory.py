"""Peak memory of importing a large source: the ingest step on a generated CoNLL and JSONL file of a given size.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/reader_memory.py --mb 200      # default; --mb 1024 works too
    PYTHONPATH=/other/checkout .venv/bin/python benchmarks/reader_memory.py    # the same files, other code

Each measurement runs in a child process (`tasks.ingest.run` with the NER kind of ./params.yaml, into a
scratch data/raw) and reports the child's peak RSS (`resource.getrusage(...).ru_maxrss`). A child that only
imports the same modules gives the baseline, so "read" is what ingesting the file added. The readers go a
line at a time, so what remains grows with the records kept for splitting (Python objects), not with
copies of the file's text. Prints one JSON object; docs/BENCHMARKS.md ("Reader memory") records a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [f"{stem}{suffix}" for stem in ("tok", "word", "name", "city", "day", "note", "item", "team")
         for suffix in ("", "s", "er", "ing", "ed", "ly", "ion", "al")]
TAGS = ["O"] * 8 + ["B-person", "I-person", "B-location"]


def sentences(seed: int = 0):
    """An endless stream of (tokens, tags): 5-25 tokens, numbered so that no two repeat."""
    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        size = rng.randint(5, 25)
        yield [f"s{number}", *rng.choices(WORDS, k=size - 1)], ["O", *rng.choices(TAGS, k=size - 1)]


def generate(path: Path, megabytes: float, fmt: str) -> None:
    """Write sentences until the file holds `megabytes` MB (10^6 bytes)."""
    target, written = int(megabytes * 1e6), 0
    with path.open("w", encoding="utf-8") as out:
        for tokens, tags in sentences():
            if fmt == "conll":
                block = "".join(f"{t}\t{g}\n" for t, g in zip(tokens, tags, strict=True)) + "\n"
            else:
                block = json.dumps({"tokens": tokens, "tags": tags}) + "\n"
            out.write(block)
            written += len(block)
            if written >= target:
                return


def child(source: str) -> None:
    """Ingest `source` ("" = import only) and print this process's peak RSS in MiB and the seconds taken."""
    from tasks import ingest
    from tasks.kinds import kind_for
    from tasks.params import load_params

    params = load_params("params.yaml")
    started = time.perf_counter()
    if source:
        with tempfile.TemporaryDirectory() as scratch:
            ingest.run(params.ingest.model_copy(update={"source": source, "format": "auto"}),
                       Path(scratch) / "raw", kind_for(params))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mib": round(peak_mib, 1), "seconds": round(time.perf_counter() - started, 1)}))


def measure(source: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", source], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="size of each generated file in MB (default 200)")
    parser.add_argument("--formats", default="conll,jsonl")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    baseline = measure("")["peak_rss_mib"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for fmt in args.formats.split(","):
            path = Path(scratch) / f"source.{fmt}"
            generate(path, args.mb, fmt)
            size_mib = path.stat().st_size / 2**20
            run = measure(str(path))
            rows.append({"format": fmt, "file_mib": round(size_mib, 1), **run,
                         "read_mib": round(run["peak_rss_mib"] - baseline, 1),
                         "read_per_file_byte": round((run["peak_rss_mib"] - baseline) / size_mib, 2)})
            path.unlink()
    print(json.dumps({"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
                      "python": platform.python_version(), "baseline_rss_mib": baseline, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
