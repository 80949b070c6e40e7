"""NER cleaning rules: unicode normalization, invisible characters, empty tokens, BIO repair, length limits,
exact and near duplicates within a split (the text rules: tasks/text.py). Every change is counted by kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tasks.io import InputFormatError
from tasks.iob import iob2_errors, to_iob2
from tasks.kinds.ner.datakind import NerData
from tasks.kinds.ner.params import NerCleanParams, NerParams
from tasks.kinds.ner.records import NerRecord
from tasks.text import near_duplicate_key_of_tokens, normalize_token


def clean_record(record: NerRecord, params: NerCleanParams, counts: Counter) -> NerRecord | None:
    """Normalize tokens and drop empty ones (with their tag); None when nothing is left.

    Dropping an empty token that carried B-X would leave a following I-X orphaned, so the next
    token inherits the B- prefix: the entity survives and the sequence stays valid IOB2.
    """
    tokens: list[str] = []
    tags: list[str] = []
    promote_next = False
    for token, tag in zip(record.tokens, record.tags, strict=True):
        cleaned = normalize_token(token, params.unicode_form)
        if cleaned != token:
            counts["tokens_normalized"] += 1
        if not cleaned:
            counts["empty_tokens_dropped"] += 1
            promote_next = promote_next or tag.startswith("B-")
            continue
        if promote_next and tag.startswith("I-"):
            tag = "B-" + tag[2:]
        promote_next = False
        tokens.append(cleaned)
        tags.append(tag)
    if not tokens:
        counts["empty_sentences_dropped"] += 1
        return None
    return NerRecord(record.id, tuple(tokens), tuple(tags), record.meta)


def repair_bio(tags: tuple[str, ...]) -> tuple[str, ...]:
    """IOB2 repair: an I-X that does not continue an X entity becomes B-X (the conlleval reading).

    Invariant: the result is valid IOB2 for any sequence of O, B-* and I-* tags."""
    return tuple(to_iob2(tags, "iob1"))


def length_problem(record: NerRecord, params: NerCleanParams) -> str | None:
    """"too_short" or "too_long" by `clean.min_tokens` / `clean.max_tokens`; None when within them."""
    if len(record.tokens) < params.min_tokens:
        return "too_short"
    if params.max_tokens is not None and len(record.tokens) > params.max_tokens:
        return "too_long"
    return None


def fix_labels(record: NerRecord, params: NerCleanParams, counts: Counter, keep_every_row: bool = False
               ) -> NerRecord | None:
    """Apply the `bio_repair` policy to a record with an invalid IOB2 sequence. A row that must be kept
    is repaired whatever the policy: the repair is the conlleval reading, as published scores read it."""
    if not iob2_errors(record.tags):
        return record
    if params.bio_repair == "drop" and not keep_every_row:
        counts["invalid_bio_dropped"] += 1
        return None
    counts["bio_repaired"] += 1
    return NerRecord(record.id, record.tokens, repair_bio(record.tags), record.meta)


def clean_split(records: list[NerRecord], params: NerCleanParams, counts: Counter,
                keep_every_row: bool = False) -> list[NerRecord]:
    """Clean each record, apply the label and length policies, drop exact and near duplicates (the
    first occurrence stays). Every change is counted by kind in `counts`.

    `keep_every_row` (an official dev or test split): tokens are normalized and labels repaired, but no
    sentence is dropped, so scores stay comparable with published ones; what would have dropped one is
    counted as `<reason>_kept`."""
    exact: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    near: set[tuple[str, ...]] = set()
    kept = []
    for record in records:
        cleaned = clean_record(record, params, counts)
        if cleaned is None and keep_every_row:
            raise InputFormatError(f"record {record.id}: no visible token left after cleaning, but an official "
                                   "dev/test sentence is never dropped; fix the sentence in the source file")
        cleaned = cleaned and fix_labels(cleaned, params, counts, keep_every_row)
        if cleaned is None:
            continue
        key, near_key = (cleaned.tokens, cleaned.tags), near_duplicate_key_of_tokens(cleaned.tokens)
        problem = length_problem(cleaned, params) or (
            "duplicates" if params.drop_exact_duplicates and key in exact else
            "near_duplicates" if params.drop_near_duplicates and near_key in near else None)
        if problem:
            counts[f"{problem}_{'kept' if keep_every_row else 'dropped'}"] += 1
            if not keep_every_row:
                continue
        exact.add(key)
        near.add(near_key)
        kept.append(cleaned)
    return kept


@dataclass(frozen=True)
class NerCleaning(NerData):
    """The NER kind as the clean stage sees it (`tasks.kinds.cleaning_kind_for`): the data side and these rules."""

    def clean(self, rows: list[NerRecord], params: NerCleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[NerRecord]:
        return clean_split(rows, params, counts, keep_every_row)

    def near_duplicate_key(self, row: NerRecord) -> tuple[str, ...]:
        return near_duplicate_key_of_tokens(row.tokens)


def kind(params: NerParams) -> NerCleaning:
    return NerCleaning(list(params.task.labels))
