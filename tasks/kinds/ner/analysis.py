"""Where a model errs: an entity-type confusion table and F1 by slice (sentence length, data source).

Entities are strict IOB2 spans (type, start, end), as in the headline metric: a predicted entity
that does not start with B- is no entity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tasks.iob import entity_spans
from tasks.kinds.ner.modeling import strict_f1

MISSED = "(missed)"  # a gold entity with no predicted entity on the same span
SPURIOUS = "(spurious)"  # a predicted entity with no gold entity on the same span
LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 40), (41, None))  # words per sentence


def confusion(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Counts of gold type -> predicted type over entity spans; the diagonal is exact hits.

    A gold span without a predicted entity on exactly that span counts as (missed); a predicted
    span without a gold one is a (spurious) row entry. Partial overlaps count as one missed and one
    spurious, as the strict metric sees them.
    """
    table: dict[str, Counter] = {}
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans = {(start, end): kind for kind, start, end in entity_spans(gold_tags)}
        predicted_spans = {(start, end): kind for kind, start, end in entity_spans(predicted_tags)}
        for span, kind in gold_spans.items():
            table.setdefault(kind, Counter())[predicted_spans.get(span, MISSED)] += 1
        for span, kind in predicted_spans.items():
            if span not in gold_spans:
                table.setdefault(SPURIOUS, Counter())[kind] += 1
    return {row: dict(sorted(counts.items())) for row, counts in sorted(table.items())}


def length_bucket(words: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if high is None or words <= high:
            return f"{low}+" if high is None else f"{low}-{high}"
    raise AssertionError("unreachable: the last bucket is open")


def slice_scores(groups: dict[str, list[int]], gold, predicted) -> dict[str, dict]:
    """Strict F1 and sentence count per named group of sentence indices."""
    return {
        name: {"f1": strict_f1([gold[i] for i in members], [predicted[i] for i in members]),
               "sentences": len(members)}
        for name, members in sorted(groups.items())
    }


def slices(records, predicted: Sequence[Sequence[str]]) -> dict[str, dict[str, dict]]:
    """F1 by sentence length in words, and by `meta.source` when the records carry one."""
    gold = [list(r.tags) for r in records]
    predicted = [list(p) for p in predicted]
    by_length: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_length.setdefault(length_bucket(len(record.tokens)), []).append(index)
        if "source" in record.meta:
            by_source.setdefault(str(record.meta["source"]), []).append(index)
    result = {"length": slice_scores(by_length, gold, predicted)}
    if by_source:
        result["source"] = slice_scores(by_source, gold, predicted)
    return result
