"""The data of sequence classification (`task: sequence-classification`): `TextExample` and its CSV/JSONL
reader, and the stages' text variants: import, cleaning, augmentation and the data contract's tables.

Each NER stage module calls into here when the task says so, so the DAG, the reports and the
guarantees stay the same: a deterministic split by a hash of the text, every cleaning change counted,
dev and test byte-identical through augmentation, and a GX contract that names the failing records.
Augmentation reuses the NER augmenters unchanged: a text is a sentence whose words are all tagged O,
which keeps the label out of their way (DECISIONS 26).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.contract import named
from tasks.io import (
    InputFormatError,
    excerpt,
    iter_jsonl_objects,
    nonblank_lines,
    read_jsonl_rows,
    read_lines,
    write_jsonl,
)
from tasks.kinds.textclass.params import TextclassValidateParams
from tasks.params import CleanParams, ValidateParams
from tasks.sentence import Sentence
from tasks.text import has_control_character, near_duplicate_key_of_text, normalize_token

if TYPE_CHECKING:
    import pandas as pd

    from tasks.basemodel import PieceCounter

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


# ---------------------------------------------------------------- cleaning


def clean_examples(examples: Sequence[TextExample], params: CleanParams, counts: Counter,
                   keep_every_row: bool = False) -> list[TextExample]:
    """Normalize each text, apply the length bounds (in words), drop texts that carry two labels in
    this split (every copy: neither label can be trusted) and exact/near duplicates (the first stays).
    Every change is counted by kind in `counts`.

    `keep_every_row` (an official dev or test split): texts are normalized, but none is dropped, so scores
    stay comparable with published ones; what would have dropped one is counted as `<reason>_kept`."""
    drop_or_keep = "kept" if keep_every_row else "dropped"
    cleaned = []
    for example in examples:
        text = normalize_token(example.text, params.unicode_form)
        if text != example.text:
            counts["texts_normalized"] += 1
        if not text and keep_every_row:
            raise InputFormatError(f"example {example.id}: no visible text left after cleaning, but an official "
                                   "dev/test example is never dropped; fix the text in the source file")
        if not text:
            counts["empty_texts_dropped"] += 1
            continue
        words = len(text.split())
        if words < params.min_tokens or (params.max_tokens is not None and words > params.max_tokens):
            counts[f"{'too_short' if words < params.min_tokens else 'too_long'}_{drop_or_keep}"] += 1
            if not keep_every_row:
                continue
        cleaned.append(TextExample(example.id, text, example.label, example.meta))
    return drop_duplicates(drop_conflicts(cleaned, counts, keep_every_row), params, counts, keep_every_row)


def drop_conflicts(examples: list[TextExample], counts: Counter, keep_every_row: bool = False) -> list[TextExample]:
    labels: dict[str, set[str]] = {}
    for example in examples:
        labels.setdefault(example.text, set()).add(example.label)
    kept = [e for e in examples if len(labels[e.text]) == 1]
    if keep_every_row:
        counts["conflicting_labels_kept"] += len(examples) - len(kept)
        return examples
    counts["conflicting_labels_dropped"] += len(examples) - len(kept)
    return kept


def drop_duplicates(examples: list[TextExample], params: CleanParams, counts: Counter,
                    keep_every_row: bool = False) -> list[TextExample]:
    exact: set[str] = set()
    near: set[tuple[str, ...]] = set()
    kept = []
    for example in examples:
        near_key = near_duplicate_key_of_text(example.text)
        problem = ("duplicates" if params.drop_exact_duplicates and example.text in exact else
                   "near_duplicates" if params.drop_near_duplicates and near_key in near else None)
        if problem:
            counts[f"{problem}_{'kept' if keep_every_row else 'dropped'}"] += 1
            if not keep_every_row:
                continue
        exact.add(example.text)
        near.add(near_key)
        kept.append(example)
    return kept


# ---------------------------------------------------------------- augmentation


def as_sentence(example: TextExample) -> Sentence:
    """The text as an all-O sentence for the NER augmenters; the label rides along in meta."""
    words = tuple(example.text.split())
    return Sentence(example.id, words, ("O",) * len(words), {**example.meta, "label": example.label})


def as_example(record: Sentence) -> TextExample:
    """Back from an (augmented) sentence: its words joined by spaces, the source's label."""
    meta = {k: v for k, v in record.meta.items() if k != "label"}
    return TextExample(record.id, " ".join(record.tokens), record.meta["label"], meta)


# ---------------------------------------------------------------- the data contract


def text_table(split: str, examples: Sequence[TextExample], train_ids: dict[str, str],
               pieces: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per text: its lengths (words, sub-word pieces: 0 when not counted), label, blank and
    control-character flags, whether it repeats an earlier text of its split, and the id of the
    identical train text for a dev/test row ('' when none: the leakage check)."""
    import pandas as pd

    rows, seen = [], set()
    for example, n_pieces in zip(examples, pieces or [0] * len(examples), strict=True):
        rows.append({"id": example.id, "split": split, "n_words": len(example.text.split()), "n_pieces": n_pieces,
                     "text_blank": not example.text.strip(),
                     "text_control": has_control_character(example.text), "is_duplicate": example.text in seen,
                     "also_in_train": train_ids.get(example.text, "") if split != "train" else ""})
        seen.add(example.text)
    return pd.DataFrame(rows, columns=["id", "split", "n_words", "n_pieces", "text_blank", "text_control",
                                       "is_duplicate", "also_in_train"])


def label_table(splits: dict[str, list[TextExample]]) -> pd.DataFrame:
    """One row per label of each text (one per text for single-label data): what `label_in_set` checks."""
    import pandas as pd

    rows = [{"id": e.id, "label": label} for examples in splits.values() for e in examples for label in e.labels]
    return pd.DataFrame(rows, columns=["id", "label"])


def class_table(splits: dict[str, list[TextExample]], labels: Sequence[str]) -> pd.DataFrame:
    """One row per (split, class): the share of the split's texts that carry the class."""
    import pandas as pd

    rows = []
    for split, examples in splits.items():
        counts = Counter(label for e in examples for label in e.labels)
        for label in labels:
            rows.append({"id": f"{split} class {label!r}", "split": split, "label": label, "examples": counts[label],
                         "share": counts[label] / len(examples) if examples else 0.0})
    return pd.DataFrame(rows, columns=["id", "split", "label", "examples", "share"])


def text_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        named("row_count", e.ExpectTableRowCountToBeBetween(min_value=params.min_sentences)),
        named("text_not_blank", e.ExpectColumnValuesToBeInSet(column="text_blank", value_set=[False])),
        named("sentence_length", e.ExpectColumnValuesToBeBetween(
            column="n_words", min_value=1, max_value=params.max_tokens_per_sentence)),
        *([named("subword_length", e.ExpectColumnValuesToBeBetween(
            column="n_pieces", max_value=params.max_subword_pieces))] if params.max_subword_pieces else []),
        named("no_leakage", e.ExpectColumnValuesToBeInSet(column="also_in_train", value_set=[""])),
        named("duplicate_share", e.ExpectColumnMeanToBeBetween(
            column="is_duplicate", max_value=params.max_duplicate_share)),
        named("no_control_characters", e.ExpectColumnValuesToBeInSet(column="text_control", value_set=[False])),
    ]


def label_expectations(labels: Sequence[str]) -> list:
    import great_expectations as gx

    return [named("label_in_set", gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)))]


def class_expectations(params: TextclassValidateParams) -> list:
    import great_expectations as gx

    low, high = params.class_share
    return [named("class_balance", gx.expectations.ExpectColumnValuesToBeBetween(
        column="share", min_value=low, max_value=high))]


def declared_labels(labels: Sequence[str], splits: dict[str, list[TextExample]]) -> list[str]:
    """`labels` (task.labels), or (when empty) the labels of the train split, sorted."""
    return list(labels) or sorted({label for e in splits.get("train", []) for label in e.labels})


def count_text_pieces(counter: PieceCounter, splits: dict[str, list[TextExample]]) -> dict[str, list[int]]:
    """Sub-word pieces per text, special tokens included."""
    return {split: counter.text_pieces([e.text for e in examples]) if examples else []
            for split, examples in splits.items()}


def contract_tables(splits: dict[str, list[TextExample]], params: TextclassValidateParams, labels: Sequence[str],
                    counter: PieceCounter | None = None) -> dict[str, tuple[pd.DataFrame, list]]:
    """The tables the text contract checks, each with its expectations: texts and classes (`labels`, task.labels;
    empty: those of the train split)."""
    import pandas as pd

    labels = declared_labels(labels, splits)
    train_ids = {e.text: e.id for e in splits.get("train", [])}
    pieces = count_text_pieces(counter, splits) if counter is not None else {}
    texts = pd.concat([text_table(s, es, train_ids, pieces.get(s)) for s, es in splits.items()], ignore_index=True)
    return {"texts": (texts, text_expectations(params)),
            "labels": (label_table(splits), label_expectations(labels)),
            "classes": (class_table(splits, labels), class_expectations(params))}


def data_profile(splits: dict[str, list[TextExample]]) -> dict:
    """Numbers that describe the data, for `dvc metrics diff` between revisions."""
    examples = [e for es in splits.values() for e in es]
    return {
        "sentences": {split: len(es) for split, es in splits.items()},
        "words": {split: sum(len(e.text.split()) for e in es) for split, es in splits.items()},
        "classes": {split: dict(sorted(Counter(label for e in es for label in e.labels).items()))
                    for split, es in splits.items()},
        "duplicate_share": {split: round(1 - len({e.text for e in es}) / len(es), 6) if es else 0.0
                            for split, es in splits.items()},
        "max_text_words": max((len(e.text.split()) for e in examples), default=0),
    }
