"""NER records and the file formats they travel in.

A record is one sentence: an id, its tokens and one IOB2 tag per token. Between stages records are
stored as JSONL (one record per line), written atomically so that a failed step never leaves a
partial file where the next step would read it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NerRecord:
    """One sentence. Invariant checked by the validate step, not here: len(tokens) == len(tags)."""

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        row = {"id": self.id, "tokens": list(self.tokens), "tags": list(self.tags)}
        if self.meta:
            row["meta"] = self.meta
        return row


class InputFormatError(ValueError):
    """An input file does not match its format; the message names the file and line."""


SPLITS = ("train", "dev", "test")


def read_conll(path: Path) -> list[NerRecord]:
    """Read `token<TAB or space>tag` lines, a blank line between sentences.

    The tag is the last column, so 4-column CoNLL (token POS chunk tag) reads too. `-DOCSTART-`
    lines are skipped. Record ids are `<file name>:<line of the sentence's first token>`.
    """
    text = _read_text(path)
    records: list[NerRecord] = []
    tokens: list[str] = []
    tags: list[str] = []
    start_line = 0

    def flush() -> None:
        if tokens:
            records.append(NerRecord(f"{path.name}:{start_line}", tuple(tokens), tuple(tags)))
        tokens.clear()
        tags.clear()

    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if len(columns) < 2:
            raise InputFormatError(
                f"{path}:{line_no}: expected 'token<TAB>tag' (2 or more columns), got {line!r}"
            )
        if not tokens:
            start_line = line_no
        tokens.append(columns[0])
        tags.append(columns[-1].strip())
    flush()
    return records


def read_jsonl(path: Path) -> list[NerRecord]:
    """Read JSONL rows `{"tokens": [...], "tags": [...]}` with an optional `id` and `meta`."""
    records = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from None
        records.append(_record_from_row(row, f"{path}:{line_no}", default_id=f"{path.name}:{line_no}"))
    return records


def _record_from_row(row: object, where: str, default_id: str) -> NerRecord:
    if not isinstance(row, dict) or "tokens" not in row or "tags" not in row:
        raise InputFormatError(f"{where}: expected an object with 'tokens' and 'tags' lists")
    tokens, tags = row["tokens"], row["tags"]
    if not (isinstance(tokens, list) and isinstance(tags, list)):
        raise InputFormatError(f"{where}: 'tokens' and 'tags' must be lists")
    if not all(isinstance(x, str) for x in tokens + tags):
        raise InputFormatError(f"{where}: every token and tag must be a string")
    return NerRecord(str(row.get("id", default_id)), tuple(tokens), tuple(tags), row.get("meta") or {})


def read_records(path: Path, fmt: str = "auto") -> list[NerRecord]:
    """Read a CoNLL or JSONL file; `auto` decides by extension (.jsonl/.json = JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in {".jsonl", ".json"} else "conll"
    records = read_jsonl(path) if fmt == "jsonl" else read_conll(path)
    if not records:
        raise InputFormatError(f"{path}: no sentences found (expected {fmt} records)")
    return records


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise InputFormatError(
            f"{path}:{line_no}: not valid UTF-8 (byte offset {exc.start}); re-encode the file as UTF-8"
        ) from None


def load_jsonl(path: Path) -> list[NerRecord]:
    """Load records that a previous stage wrote (same reader, stricter expectations)."""
    return read_jsonl(Path(path))


def write_jsonl(path: Path, records: Iterable[NerRecord]) -> int:
    """Write records atomically (temporary file in the same folder, then rename). Returns the count."""
    lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so readers see either the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(Path(path), json.dumps(payload, indent=2, sort_keys=True) + "\n")


def iter_splits(folder: Path) -> Iterator[tuple[str, Path]]:
    for split in SPLITS:
        yield split, Path(folder) / f"{split}.jsonl"
