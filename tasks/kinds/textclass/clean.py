"""Text classification's cleaning rules (the clean stage): unicode normalization, the length bounds in words,
texts carrying two labels, exact and near duplicates; every change counted by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.io import InputFormatError
from tasks.kinds.textclass.datakind import TextClassData
from tasks.kinds.textclass.params import TextclassParams
from tasks.kinds.textclass.records import TextExample
from tasks.params import CleanParams
from tasks.text import near_duplicate_key_of_text, normalize_token


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


@dataclass(frozen=True)
class TextClassCleaning(TextClassData):
    """The text-classification kind as the clean stage sees it (`tasks.kinds.cleaning_kind_for`): the data side
    and these rules."""

    def clean(self, rows: list[TextExample], params: CleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[TextExample]:
        return clean_examples(rows, params, counts, keep_every_row)

    def near_duplicate_key(self, row: TextExample) -> tuple[str, ...]:
        return near_duplicate_key_of_text(row.text)


def kind(params: TextclassParams) -> TextClassCleaning:
    return TextClassCleaning(list(params.task.labels), params.task.multi_label)
