"""The rows of text classification: `TextExample`, its CSV/JSONL readers (the import step), the split files
every stage reads, and the adapter that lets the augmenters rewrite texts (augment, distill's transfer set).
Cleaning is tasks/kinds/textclass/clean.py, the data contract tasks/kinds/textclass/contract.py.

A text is a sentence whose words are all tagged O, which keeps the label out of the augmenters' way
(DECISIONS 26). Every stage of the DAG reads rows through here, so this file is a dep of all of them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.io import (
    InputFormatError,
    excerpt,
    iter_jsonl_objects,
    nonblank_lines,
    read_jsonl_rows,
    read_lines,
    write_jsonl,
)
from tasks.sentence import Sentence

# ---------------------------------------------------------------- records

LABEL_JOIN = "|"  # joins the labels of a multi-label example (sorted), so one string identifies the set


@dataclass(frozen=True)
class TextExample:
    """One text and its label; for a multi-label task, its labels sorted and joined by `|` ('' = none)."""

    id: str
    text: str
    label: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """The label set: one label, or a multi-label example's labels (maybe none)."""
        return tuple(self.label.split(LABEL_JOIN)) if self.label else ()

    def to_json(self) -> dict:
        row = {"id": self.id, "text": self.text, "label": self.label}
        return {**row, "meta": self.meta} if self.meta else row


def label_set(value, where: str, column: str, separator: str) -> str:
    """A multi-label cell (a JSON list, or labels joined by `separator`; empty = no label) as sorted
    labels joined by `|`."""
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str):
        parts = value.split(separator) if value.strip() else []
    else:
        parts = [None]
    typed = all(isinstance(part, str | int) and not isinstance(part, bool) for part in parts)
    labels = {str(part).strip() for part in parts}
    if not typed or "" in labels or any(LABEL_JOIN in label for label in labels):
        raise InputFormatError(f"{where}: {column!r} must hold labels joined by {separator!r} (or a JSON list of "
                               f"labels without '|'), got {excerpt(value)}")
    return LABEL_JOIN.join(sorted(labels))


def _example(row: dict, where: str, default_id: str, text_column: str, label_column: str | None,
             separator: str | None = None) -> TextExample:
    for column in (text_column, label_column or text_column):
        if column not in row:
            raise InputFormatError(f"{where}: no {column!r} column (columns: {excerpt(sorted(row))})")
    text = row[text_column]
    if not isinstance(text, str) or not text.strip():
        raise InputFormatError(f"{where}: {text_column!r} must be non-empty text, got {excerpt(text)}")
    if label_column is None:  # texts to classify
        return TextExample(str(row.get("id") or default_id), text.strip(), "")
    label = row[label_column]
    if separator is not None:
        return TextExample(str(row.get("id") or default_id), text.strip(),
                           label_set(label, where, label_column, separator))
    if not isinstance(label, str | int) or isinstance(label, bool) or not str(label).strip():
        raise InputFormatError(f"{where}: {label_column!r} must be one label (text or integer), got {excerpt(label)}")
    if LABEL_JOIN in str(label):
        raise InputFormatError(f"{where}: {label_column!r} is {excerpt(label)}, but '|' separates the labels of a "
                               "multi-label example; set task.multi_label: true for such data")
    return TextExample(str(row.get("id") or default_id), text.strip(), str(label).strip())


def read_text_examples(path: Path, text_column: str = "text", label_column: str | None = "label",
                       separator: str | None = None) -> list[TextExample]:
    """Examples from a .csv (header row) or .jsonl file; ids default to `<file stem>:<line>`. Without a
    `label_column`, texts to classify (label ''); with a `separator`, multi-label examples.

    UTF-8 with or without a byte-order mark (Excel writes one), or UTF-16 with one; any other bytes are
    an error naming their line (tasks.io.read_lines).
    """
    return list(iter_text_examples(path, text_column, label_column, separator))


def iter_text_examples(path: Path, text_column: str = "text", label_column: str | None = "label",
                       separator: str | None = None) -> Iterator[TextExample]:
    """`read_text_examples` an example at a time (the import step never holds a whole source)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        rows = iter_csv_rows(path)
    elif path.suffix.lower() == ".jsonl":
        rows = iter_jsonl_objects(path, '{"text": "...", "label": "..."}')
    else:
        raise InputFormatError(f"{path}: expected a .csv or .jsonl file")
    empty = True
    for line_no, row in rows:
        empty = False
        yield _example(row, f"{path}:{line_no}", f"{path.stem}:{line_no}", text_column, label_column, separator)
    if empty:
        raise InputFormatError(f"{path}: no examples")


def read_unlabelled(path: Path) -> list[Sentence]:
    """Unlabelled texts as untagged sentences of their words: a `.txt` file holds one text per line; a
    .csv or .jsonl file a `text` column (any label column is ignored). Ids are `<file stem>:<line>`."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if path.suffix.lower() == ".txt":
        texts = [(f"{path.stem}:{line_no}", line) for line_no, line in nonblank_lines(path)]
    else:
        texts = [(example.id, example.text) for example in read_text_examples(path, "text", None)]
    return [Sentence(text_id, tuple(text.split()), ("O",) * len(text.split())) for text_id, text in texts]


def csv_rows(path: Path) -> list[tuple[int, dict]]:
    """(line where the row starts, {column: value}) for each row after the header; blank lines skipped.

    Strict: a row must have exactly the header's fields (an unquoted comma in a text would otherwise
    shift the label), and a quoted field must close (an open quote would otherwise swallow later rows).
    The file is read a line at a time; a field may hold up to MAX_CSV_FIELD characters.
    """
    return list(iter_csv_rows(path))


def iter_csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """`csv_rows` a row at a time."""
    csv.field_size_limit(MAX_CSV_FIELD)
    reader = csv.reader((line + "\n" for _, line in read_lines(path)), strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line_no, start = start, reader.line_num + 1
            if not fields or fields == [""]:
                continue
            if header is None:
                header = _csv_header(path, line_no, fields)
            elif len(fields) != len(header):
                raise InputFormatError(f"{path}:{line_no}: {_field_count_problem(fields, header)}")
            else:
                yield line_no, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        raise InputFormatError(f"{path}:{start}: {_csv_problem(exc, start, reader.line_num)}") from None


# The csv module's default limit (128 KiB) called a long, correctly quoted text an unclosed quote; a text this
# long (a book chapter) is still read, and only a longer field, or a quote that never closes, is refused.
MAX_CSV_FIELD = 16 * 2**20


def _field_count_problem(fields: list[str], header: list[str]) -> str:
    got = f"{len(fields)} field{'s' if len(fields) != 1 else ''}, but the header has {len(header)} ({','.join(header)})"
    if len(fields) > len(header):
        return f'{got}; quote a text that holds a comma, e.g. "hello, world",positive'
    return f"{got}; every row needs a value for each column"


def _csv_header(path: Path, line_no: int, fields: list[str]) -> list[str]:
    header = [name.strip() for name in fields]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated or "" in header:
        raise InputFormatError(f"{path}:{line_no}: the header must name each column once, got {excerpt(fields)}")
    return header


def _csv_problem(exc: csv.Error, start: int, end: int) -> str:
    """What a `csv.Error` means for the user, for a row starting on line `start` and read to `end`."""
    reason = str(exc)
    if "unexpected end of data" in reason:
        return ("a quoted field opens in this row and never closes (it runs to line "
                f"{end}); close the quote, and double any quote inside a text (\"\")")
    if "field larger than field limit" in reason:
        return (f"a field runs over {MAX_CSV_FIELD} characters (to line {end}), the most a text may hold; shorten "
                "it, or close a quote that never closes (and double any quote inside a text: \"\")")
    if "expected after" in reason:
        spans = f" (the row runs to line {end})" if end > start else ""
        return (f"a quoted field must end with a quote followed by a comma or the line's end{spans}; "
                'double a quote inside a quoted text ("")')
    return f"not valid CSV ({reason})"


def mentions(records: Sequence[Sentence], entity_type: str) -> list[TextExample]:
    """A classification set derived from NER records: label `entity_type` when a sentence has an entity
    of that type, else `none`. The text is the tokens joined by spaces."""
    wanted = f"B-{entity_type}"
    return [TextExample(r.id, " ".join(r.tokens), entity_type if wanted in r.tags else "none") for r in records]


def write_examples(path: Path, examples: Sequence[TextExample]) -> None:
    write_jsonl(Path(path), examples)


def load_examples(path: Path) -> list[TextExample]:
    """Examples a previous stage wrote (labels already in their canonical form)."""
    rows = read_jsonl_rows(path)
    return [TextExample(row["id"], row["text"], row["label"], row.get("meta", {})) for row in rows]


# ---------------------------------------------------------------- import


def read_examples(path, text_column: str, label_column: str, separator: str | None = None) -> list[TextExample]:
    """A user's CSV/JSONL file, with unique ids (a repeated id names both places); with a `separator`,
    multi-label examples."""
    examples = read_text_examples(path, text_column, label_column, separator)
    first: dict[str, int] = {}
    for position, example in enumerate(examples):
        if example.id in first:
            raise InputFormatError(f"{path}: id {excerpt(example.id)} appears twice (examples {first[example.id] + 1} "
                                   f"and {position + 1}); ids must be unique")
        first[example.id] = position
    return examples


# ---------------------------------------------------------------- augmentation


def as_sentence(example: TextExample) -> Sentence:
    """The text as an all-O sentence for the NER augmenters; the label rides along in meta."""
    words = tuple(example.text.split())
    return Sentence(example.id, words, ("O",) * len(words), {**example.meta, "label": example.label})


def as_example(record: Sentence) -> TextExample:
    """Back from an (augmented) sentence: its words joined by spaces, the source's label."""
    meta = {k: v for k, v in record.meta.items() if k != "label"}
    return TextExample(record.id, " ".join(record.tokens), record.meta["label"], meta)


class TextRows:
    """How every stage reads texts and hands them to the augmenters (as all-O sentences): shared by the data
    side (tasks/kinds/textclass/datakind.py) and the model side (tasks/kinds/textclass/modelkind.py), so that
    neither imports the other."""

    def read(self, path: Path) -> list[TextExample]:
        return load_examples(path)

    def as_sentence(self, row: TextExample) -> Sentence:
        return as_sentence(row)

    def from_sentence(self, sentence: Sentence) -> TextExample:
        return as_example(sentence)

    def read_unlabelled(self, path: Path) -> list[Sentence]:
        return read_unlabelled(path)
