"""A source folder's layout, shared by the ingest stage and the commands that add to it (`flowtune data add`,
`flowtune label pull`, flows/batches.py).

Growing data: a folder of batch files (the types the kind reads, `DataKind.source_suffixes`) is read in
name order (its own files, then those of `batches/`) and every row split by the same hash, so a new batch
never moves an old row. Beside official splits, the batch files live in `batches/` and join train only (the
contract's leakage check then covers them like any train row). Files of other types are listed in the
report as ignored, never read.

Label corrections: the files of a source folder's `corrections/` (written by `flowtune label pull --review`)
hold rows in the batch format whose ids are those of rows already in the source; each replaces the row of its
id (the same text, other labels; files in name order, a later one wins) wherever that row is read; one whose row
now has another text (an edited source file) is reported stale, not applied. The source files stay as they
are, so deleting a corrections file undoes it; the report counts what each applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.io import SPLITS, InputFormatError

BATCHES = "batches"  # a source folder's subfolder of batch files (`flowtune data add` copies into it)
CORRECTIONS = "corrections"  # a source folder's subfolder of label corrections (`flowtune label pull --review`)


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


def visible_files(folder: Path) -> list[Path]:
    """A folder's files, not its subfolders nor hidden files (.gitkeep, .DS_Store); none for no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_file() or p.is_symlink()))


def source_files(folder: Path, suffixes: tuple[str, ...]) -> SourceFiles:
    """The layout of a source folder: official splits (train/dev/test files) plus `batches/`, or a flat
    folder whose batch files, beside it and in `batches/`, are all hash-split."""
    official = presplit_files(folder) if has_official_splits(folder) else {}
    # Beside official splits, the folder's other files (README, SHA256SUMS) are not data: only batches/ is.
    candidates = ([] if official else visible_files(folder)) + visible_files(folder / BATCHES)
    batches = [p for p in candidates if p.suffix.lower() in suffixes]
    if not official and not batches:
        raise InputFormatError(f"{folder}: no data: expected batch files ({', '.join('*' + s for s in suffixes)}) "
                               f"in it or in {BATCHES}/, or one train.*, dev.* and test.* file (official splits)")
    return SourceFiles(official, batches, [p for p in candidates if p not in batches])


def read_corrections(folder: Path, suffixes: tuple[str, ...], read: Callable[[Path], Iterable]
                     ) -> tuple[dict[str, tuple], list[Path]]:
    """id -> (corrected row, its file) from `<folder>/corrections/` (name order, a later file wins); the files."""
    files = [p for p in visible_files(folder / CORRECTIONS) if p.suffix.lower() in suffixes]
    corrections: dict[str, tuple] = {}
    for path in files:
        corrections |= {row.id: (row, path) for row in read(path)}
    return corrections, files
