"""NER records and the file formats they travel in.

A record is one sentence: an id, its tokens and one IOB2 tag per token. Between stages records are
stored as JSONL (one record per line), written atomically (tasks/io.py) so that a failed step never
leaves a partial file where the next step would read it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.io import InputFormatError, excerpt, nonblank_lines, parse_json_line, read_jsonl_objects, read_lines
from tasks.iob import to_iob2
from tasks.sentence import Sentence

NerRecord = Sentence  # one NER record is one tagged sentence
IOB_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")  # a tag of any scheme flowtune reads


def read_conll(path: Path) -> list[NerRecord]:
    """Read CoNLL: one token per line, its tag in the last column, a blank line between sentences.

    2-column (token tag), 3-column and 4-column CoNLL-2003 (token POS chunk tag) files read alike;
    `-DOCSTART-` lines end a sentence and are skipped. A file is either tab-separated (any token line
    has a tab) or space-separated, and every token line has the same number of columns: a line that
    breaks either rule is an error naming it, since the tag would otherwise be read from the wrong
    column. Record ids are `<file name>:<line of the sentence's first token>`. The file is read twice, a
    line at a time (first for its separator), never held whole.
    """
    return list(iter_conll(path))


def iter_conll(path: Path) -> Iterator[NerRecord]:
    """`read_conll` a sentence at a time."""
    separator = "\t" if any("\t" in line for _, line in read_lines(path)) else None
    first_row: tuple[int, int] | None = None  # (line number, column count) of the first token line
    tokens: list[str] = []
    tags: list[str] = []
    start_line = 0
    for line_no, line in _with_final_blank(read_lines(path)):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                yield NerRecord(f"{path.name}:{start_line}", tuple(tokens), tuple(tags))
            tokens.clear()
            tags.clear()
            continue
        columns = _conll_columns(path, line_no, line, separator)
        first_row = first_row or (line_no, len(columns))
        if len(columns) != first_row[1]:
            raise InputFormatError(
                f"{path}:{line_no}: {len(columns)} columns, but line {first_row[0]} has {first_row[1]}; every "
                f"token line needs the same columns (token ... tag), got {excerpt(line)}")
        if not tokens:
            start_line = line_no
        tokens.append(columns[0])
        tags.append(sys.intern(columns[-1]))  # a handful of distinct tags: one string each, not one per token


def _conll_columns(path: Path, line_no: int, line: str, separator: str | None) -> list[str]:
    if separator == "\t" and "\t" not in line and len(line.split()) > 1:
        raise InputFormatError(f"{path}:{line_no}: separated by spaces, but other lines use tabs; use one "
                               f"separator in the whole file, got {excerpt(line)}")
    columns = [c.strip() for c in line.split(separator)]
    if len(columns) < 2 or not columns[-1]:
        raise InputFormatError(f"{path}:{line_no}: expected 'token<TAB>tag' (2 or more columns), got {excerpt(line)}")
    return columns


def read_jsonl(path: Path) -> list[NerRecord]:
    """Read JSONL rows `{"tokens": [...], "tags": [...]}` with an optional `id` and `meta`."""
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[NerRecord]:
    for line_no, line in nonblank_lines(path):
        row = parse_json_line(path, line_no, line, '{"tokens": [...], "tags": [...]}')
        yield _record_from_row(row, f"{path}:{line_no}", default_id=f"{path.name}:{line_no}")


def _record_from_row(row: object, where: str, default_id: str) -> NerRecord:
    if not isinstance(row, dict) or "tokens" not in row or "tags" not in row:
        got = f"keys {sorted(row)}" if isinstance(row, dict) else type(row).__name__
        raise InputFormatError(f"{where}: expected an object with 'tokens' and 'tags' lists, got {got}")
    for key in ("tokens", "tags"):
        value = row[key]
        if not isinstance(value, list):
            raise InputFormatError(f"{where}: '{key}' must be a list of strings, got {type(value).__name__} "
                                   f"{_short(value)}")
        wrong = next((x for x in value if not isinstance(x, str)), None)
        if wrong is not None:
            raise InputFormatError(f"{where}: every item of '{key}' must be a string, got "
                                   f"{type(wrong).__name__} {_short(wrong)}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputFormatError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
    return NerRecord(str(row.get("id", default_id)), tuple(row["tokens"]), tuple(row["tags"]), meta)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_records(path: Path, fmt: str = "auto", tag_scheme: str = "iob2") -> list[NerRecord]:
    """Read a CoNLL or JSONL file (`auto`: by extension, .jsonl/.json = JSONL) into IOB2 records.

    `tag_scheme` is the file's scheme (iob1, iob2 or bioes); tags are converted to IOB2, the one
    scheme every later step uses. Record ids must be unique: errors and reports point by id.
    """
    records = list(iter_records(path, fmt, tag_scheme))
    _check_unique_ids(Path(path), records)
    return records


def iter_records(path: Path, fmt: str = "auto", tag_scheme: str = "iob2") -> Iterator[NerRecord]:
    """`read_records` a record at a time, without its check of unique ids (which needs them all: the
    import step checks them its own way, tasks/ingest.py)."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in {".jsonl", ".json"} else "conll"
    empty = True
    for record in iter_jsonl(path) if fmt == "jsonl" else iter_conll(path):
        empty = False
        yield _to_iob2(record, tag_scheme)
    if empty:
        raise InputFormatError(f"{path}: no sentences found (expected {fmt} records; the file is empty or holds "
                               "only blank and -DOCSTART- lines)")


def read_untagged(path: Path, fmt: str = "auto") -> list[NerRecord]:
    """Sentences to tag, or unlabelled text, as all-"O" records (what a file has for tags is ignored).

    `auto` goes by the extension: `.jsonl` holds `{"tokens": [...]}` objects (`id` optional); `.txt` one
    sentence per line, split at whitespace; anything else is CoNLL, one token per line in the first column
    and a blank line between sentences. Ids are `<file name>:<line>` unless a JSONL row has one.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".txt": "lines"}.get(path.suffix.lower(), "conll")
    if fmt == "jsonl":
        return [_untagged_row(path, line_no, row)
                for line_no, row in read_jsonl_objects(path, '{"tokens": ["..."]}')]
    if fmt == "lines":
        _refuse_conll_as_lines(path)
        return [_untagged(f"{path.name}:{line_no}", line.split()) for line_no, line in nonblank_lines(path)]
    records, block, start = [], [], 0
    for line_no, line in _with_final_blank(read_lines(path)):
        if line.strip() and not line.startswith("-DOCSTART-"):
            start = start if block else line_no
            block.append(line.split("\t" if "\t" in line else None)[0].strip())
        elif block:
            records.append(_untagged(f"{path.name}:{start}", block))
            block = []
    return records


def _with_final_blank(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The lines, then a blank one: it ends the last sentence as a blank line ends the others."""
    line_no = 0
    for line_no, line in lines:
        yield line_no, line
    yield line_no + 1, ""


def _refuse_conll_as_lines(path: Path) -> None:
    """CoNLL-2003 ships as .txt: a file whose lines are all `token tag` pairs is CoNLL, not sentences."""
    first = next(nonblank_lines(path), None)
    if first and all(len(parts := line.split()) >= 2 and IOB_TAG.match(parts[-1]) for _, line in nonblank_lines(path)):
        raise InputFormatError(f"{path}: every line ends in a tag (line {first[0]}: {excerpt(first[1])}), so this "
                               "is CoNLL; a .txt file is read as one sentence per line: name it .conll")


def _untagged_row(path: Path, line_no: int, row: dict) -> NerRecord:
    tokens = row.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise InputFormatError(f"{path}:{line_no}: expected 'tokens', a list of strings, got {excerpt(tokens)}")
    return _untagged(str(row.get("id", f"{path.name}:{line_no}")), tokens)


def _untagged(record_id: str, tokens: list[str]) -> NerRecord:
    return NerRecord(record_id, tuple(tokens), ("O",) * len(tokens))


def _check_unique_ids(path: Path, records: list[NerRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise InputFormatError(f"{path}: record id {excerpt(record.id)} appears twice; ids must be unique")
        seen.add(record.id)


def _to_iob2(record: NerRecord, scheme: str) -> NerRecord:
    if scheme == "iob2":
        return record
    return NerRecord(record.id, record.tokens, tuple(to_iob2(record.tags, scheme)), record.meta)


def load_jsonl(path: Path) -> list[NerRecord]:
    """Load records that a previous stage wrote (same reader, stricter expectations)."""
    return read_jsonl(Path(path))


class NerRows:
    """How every stage reads NER rows and hands them to the augmenters: shared by the data side
    (tasks/kinds/ner/datakind.py) and the model side (tasks/kinds/ner/modelkind.py), so that neither
    imports the other."""

    def read(self, path: Path) -> list[NerRecord]:
        return load_jsonl(path)

    def as_sentence(self, row: NerRecord) -> Sentence:
        return row  # a record is a tagged sentence already

    def from_sentence(self, sentence: Sentence) -> NerRecord:
        return sentence

    def read_unlabelled(self, path: Path) -> list[Sentence]:
        return read_untagged(path)
