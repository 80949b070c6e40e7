"""Files between stages, whatever the task: the split names, atomic writes, JSON and JSONL, decoding input.

Everything here is independent of what a row holds (an NER sentence, a labelled text): a stage writes
`<folder>/<split>.jsonl` with one JSON object per row, atomically, so a failed step never leaves a
partial file where the next step would read it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

SPLITS = ("train", "dev", "test")
# What the import step writes next to the splits: the source, the counts and how the splits were made
# (`split_by`: "source" = a folder of official splits, kept as given; "hash" = a single file, hash-split).
INGEST_REPORT = "ingest_report.json"


class InputFormatError(ValueError):
    """An input file does not match its format; the message names the file and line."""


class JsonRow(Protocol):
    """A row a stage writes: one JSON object per line."""

    def to_json(self) -> dict: ...


def iter_splits(folder: Path) -> Iterator[tuple[str, Path]]:
    for split in SPLITS:
        yield split, Path(folder) / f"{split}.jsonl"


def official_splits(raw_dir: Path) -> bool:
    """Whether the import step kept a source folder's own train/dev/test splits (its report's `split_by`).

    Without a report (a folder not written by the import step) the splits count as hash-split: cleaning
    then treats every split alike, as it did before the import recorded where its splits came from."""
    report = Path(raw_dir) / INGEST_REPORT
    if not report.is_file():
        return False
    return json.loads(report.read_text(encoding="utf-8")).get("split_by") == "source"


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so readers see either the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # A failed write (disk full) names no file; the user must learn which output could not be written.
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of JSONL text with their 1-based numbers.

    Split on LF only: `str.splitlines()` also splits on U+2028, U+2029, U+0085 and a few control
    characters, which `json.dumps(ensure_ascii=False)` leaves unescaped inside strings.
    """
    for line_no, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield line_no, line


def read_jsonl_objects(path: Path, example: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a user's JSONL file (any encoding `read_text`
    takes); a line that is not a JSON object is an error naming it. `example` shows the expected shape."""
    rows = []
    for line_no, line in jsonl_lines(read_text(path)):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                   f"expected one object such as {example} per line") from None
        if not isinstance(row, dict):
            raise InputFormatError(f"{path}:{line_no}: expected a JSON object such as {example}, "
                                   f"got {type(row).__name__}")
        rows.append((line_no, row))
    return rows


def read_jsonl_rows(path: Path) -> list[dict]:
    """The JSON objects a stage wrote with `write_jsonl` (one per line)."""
    return [json.loads(line) for _, line in jsonl_lines(Path(path).read_text(encoding="utf-8"))]


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(Path(path), json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Iterable[JsonRow]) -> int:
    """Write rows atomically (temporary file in the same folder, then rename). Returns the count."""
    lines = [json.dumps(row.to_json(), ensure_ascii=False) for row in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


# Byte-order marks we decode; any other file must be UTF-8.
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def read_text(path: Path) -> str:
    """The file's text with LF line ends. UTF-8 (BOM optional) or UTF-16 with a BOM; CRLF and CR accepted.

    Undecodable bytes and NUL bytes are errors naming the line: a NUL usually means UTF-16 without a BOM.
    """
    data = path.read_bytes()
    encoding = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom):], name
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise InputFormatError(
            f"{path}:{line_no}: not valid {encoding.upper()} (byte offset {exc.start}); re-encode the file as UTF-8"
        ) from None
    if "\x00" in text:
        line_no = text[: text.index("\x00")].count("\n") + 1
        raise InputFormatError(f"{path}:{line_no}: NUL byte in the text (a UTF-16 file without a byte-order "
                               "mark?); re-encode the file as UTF-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def empty_folder(folder: Path | None) -> None:
    """Remove everything inside `folder`, keeping the folder itself (e.g. a DVC output); nothing if it is absent."""
    if folder is None or not folder.exists():
        return
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def swap_in_folder(staged: Path, dest: Path) -> None:
    """Replace folder `dest` (if any) by `staged`: two renames in one parent folder, the old one removed after."""
    if not dest.exists():
        os.replace(staged, dest)
        return
    old = dest.with_name(f".{dest.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
