"""Files between stages, whatever the task: the split names, atomic writes, JSON and JSONL, decoding input.

Everything here is independent of what a row holds (an NER sentence, a labelled text): a stage writes
`<folder>/<split>.jsonl` with one JSON object per row, atomically, so a failed step never leaves a
partial file where the next step would read it.
"""

from __future__ import annotations

import io
import json
import os
import reprlib
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


# How much of an offending line or value an error quotes: enough to recognise it, while a 100 MB line
# never lands whole in a log, the flow run's state or a webhook message.
QUOTE_LIMIT = 200
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = QUOTE_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 20


def excerpt(value: object) -> str:
    """`repr` of a line or value from an input file, cut to about QUOTE_LIMIT characters for an error."""
    if isinstance(value, str):
        if len(value) <= QUOTE_LIMIT:
            return repr(value)
        return f"{value[:QUOTE_LIMIT]!r}... ({len(value)} characters)"
    text = _REPR.repr(value)  # bounded work too: reprlib stops at its limits instead of building the whole repr
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "..."


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
    atomic_write_lines(path, [text])


def atomic_write_lines(path: Path, pieces: Iterable[str]) -> None:
    """Write the pieces of text one after another, atomically as `atomic_write_text` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(pieces)
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
    """(line number, object) for each non-blank line of a user's JSONL file (any encoding `read_lines`
    takes); a line that is not a JSON object is an error naming it. `example` shows the expected shape."""
    return list(iter_jsonl_objects(path, example))


def iter_jsonl_objects(path: Path, example: str) -> Iterator[tuple[int, dict]]:
    """`read_jsonl_objects` one object at a time (the import step never holds a whole source)."""
    for line_no, line in nonblank_lines(path):
        row = parse_json_line(path, line_no, line, example)
        if not isinstance(row, dict):
            raise InputFormatError(f"{path}:{line_no}: expected a JSON object such as {example}, "
                                   f"got {type(row).__name__}")
        yield line_no, row


def parse_json_line(path: Path, line_no: int, line: str, example: str) -> object:
    """One line of a user's JSONL file as a JSON value; what does not parse is an error naming the line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFormatError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno}); "
                               f"expected one object such as {example} per line") from None
    except RecursionError:  # `[[[[...` nested thousands deep: the parser gives up with a traceback otherwise
        raise InputFormatError(f"{path}:{line_no}: JSON nested too deeply ({len(line)} characters); expected "
                               f"one flat object such as {example} per line") from None


def read_jsonl_rows(path: Path) -> list[dict]:
    """The JSON objects a stage wrote with `write_jsonl` (one per line)."""
    return [json.loads(line) for _, line in jsonl_lines(Path(path).read_text(encoding="utf-8"))]


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(Path(path), json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Iterable[JsonRow]) -> int:
    """Write rows atomically (temporary file in the same folder, then rename). Returns the count.

    Written a line at a time: a large split is never held a second time as one string."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for row in rows:
            count += 1
            yield json.dumps(row.to_json(), ensure_ascii=False) + "\n"

    atomic_write_lines(Path(path), lines())
    return count


# Byte-order marks we decode; any other file must be UTF-8.
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


# Bytes read and decoded at a time: memory holds a block and the longest line, never the whole file.
_BLOCK = 1 << 20


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Each line of a user's file with its 1-based number, without its line end, decoded a block of lines
    at a time: memory holds a block and the longest line, never the whole file (a source may be gigabytes).

    UTF-8 (BOM optional) or UTF-16 with a BOM; LF, CRLF and CR line ends. Undecodable bytes and NUL bytes
    are errors naming the line: a NUL usually means UTF-16 without a BOM.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(3)
        encoding, bom = next(((name, bom) for bom, name in _BOMS if head.startswith(bom)), ("utf-8", b""))
        handle.seek(len(bom))
        blocks = _utf8_blocks(path, handle, len(bom)) if encoding == "utf-8" else _utf16_blocks(path, handle, encoding)
        line_no = 0
        for lines in blocks:
            for line in lines:
                line_no += 1
                yield line_no, line


def _utf8_blocks(path: Path, handle: io.BufferedReader, offset: int) -> Iterator[list[str]]:
    """The lines of UTF-8 bytes, a list per block cut after its last LF (so no character and no CRLF is cut in
    two); an undecodable byte is an error naming its line and byte offset."""
    carry: list[bytes] = []  # bytes after the last LF so far: the start of a line
    lines_before = 0
    while True:
        block = handle.read(_BLOCK)
        cut = block.rfind(b"\n") + 1
        if block and not cut:  # part of a line longer than a block
            carry.append(block)
            continue
        chunk, carry = b"".join([*carry, block[:cut]]), [block[cut:]]
        if chunk:
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                line_no = lines_before + _line_ends(chunk[: exc.start]) + 1
                raise InputFormatError(f"{path}:{line_no}: not valid UTF-8 (byte offset {offset + exc.start}); "
                                       "re-encode the file as UTF-8") from None
            lines = _split_lines(path, text, lines_before)
            offset, lines_before = offset + len(chunk), lines_before + len(lines)
            yield lines
        if not block:
            return


def _utf16_blocks(path: Path, handle: io.BufferedReader, encoding: str) -> Iterator[list[str]]:
    """The lines of UTF-16 text, a list per block; the decoder reads ahead, so an error names the line it
    was reading or one just before the bad bytes."""
    reader = io.TextIOWrapper(handle, encoding=encoding, newline=None)  # CR and CRLF read as LF
    pending, lines_before = "", 0
    while True:
        try:
            block = reader.read(_BLOCK)
        except UnicodeDecodeError:
            raise InputFormatError(f"{path}:{lines_before + 1}: not valid {encoding.upper()} (at this line or a "
                                   "few after it); re-encode the file as UTF-8") from None
        text = pending + block
        cut = text.rfind("\n") + 1 if block else len(text)
        text, pending = text[:cut], text[cut:]
        lines = _split_lines(path, text, lines_before) if text else []
        lines_before += len(lines)
        yield lines
        if not block:
            return


def _line_ends(data: bytes) -> int:
    """How many line ends (LF, CRLF or CR) the bytes hold."""
    return data.count(b"\n") + data.replace(b"\r\n", b"\n").count(b"\r")


def _split_lines(path: Path, text: str, lines_before: int) -> list[str]:
    """A block's lines (a line end closes a line: none starts after the block's last one)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line_no = lines_before + text.count("\n", 0, text.index("\x00")) + 1
        raise InputFormatError(f"{path}:{line_no}: NUL byte in the text (a UTF-16 file without a byte-order "
                               "mark?); re-encode the file as UTF-8")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """`read_lines` without the blank lines."""
    return ((line_no, line) for line_no, line in read_lines(path) if line.strip())


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
