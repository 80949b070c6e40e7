"""Behavioural checks in the CheckList style (Ribeiro et al., 2020), as pass rates.

- Name invariance, generated from the test data: in each test sentence that mentions a name (an
  entity of `evaluate.checklist.name_type`), swap it for another name of the test set with the same
  number of words. The entity's tags stay put, so the model's predicted tags must not change at all.
- Minimum functionality: short handwritten sentences (`evaluate.checklist.mft_file`, JSONL like the
  data) that any usable model must tag exactly. Cases with a tag the model does not know are
  skipped and counted as such.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.iob import entity_spans
from tasks.kinds.ner.records import NerRecord, load_jsonl

Tagger = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def names_by_length(records: Sequence[NerRecord], name_type: str) -> dict[int, list[tuple[str, ...]]]:
    """Distinct surface forms of the name entities, grouped by their number of words (sorted: stable)."""
    names: dict[int, set[tuple[str, ...]]] = {}
    for record in records:
        for kind, start, end in entity_spans(record.tags):
            if kind == name_type:
                names.setdefault(end - start, set()).add(tuple(record.tokens[start:end]))
    return {length: sorted(found) for length, found in names.items()}


def swapped_names(
    records: Sequence[NerRecord], name_type: str, max_cases: int, seed: int
) -> list[tuple[int, list[str]]]:
    """(record index, tokens with its first name swapped for another) for up to max_cases records."""
    pool = names_by_length(records, name_type)
    cases = []
    for index, record in enumerate(records):
        spans = [(start, end) for kind, start, end in entity_spans(record.tags) if kind == name_type]
        if not spans:
            continue
        start, end = spans[0]
        current = tuple(record.tokens[start:end])
        others = [name for name in pool[end - start] if name != current]
        if not others:
            continue
        other = random.Random(f"{seed}:{record.id}").choice(others)
        cases.append((index, [*record.tokens[:start], *other, *record.tokens[end:]]))
        if len(cases) == max_cases:
            break
    return cases


def rate(passed: int, cases: int, **extra) -> dict:
    return {"cases": cases, "passed": passed, "pass_rate": passed / cases if cases else None, **extra}


def name_invariance(records: Sequence[NerRecord], predicted: Sequence[Sequence[str]], tag: Tagger,
                    name_type: str, max_cases: int, seed: int) -> dict:
    """Share of name swaps after which the model predicts exactly the same tags."""
    cases = swapped_names(records, name_type, max_cases, seed)
    again = tag([tokens for _, tokens in cases]) if cases else []
    passed = sum(list(predicted[index]) == list(tags) for (index, _), tags in zip(cases, again, strict=True))
    return rate(passed, len(cases))


def minimum_functionality(path: Path, labels: set[str], tag: Tagger) -> dict:
    """Share of the handwritten sentences the model tags exactly (unknown-label cases skipped)."""
    cases = [r for r in load_jsonl(path) if set(r.tags) <= labels]
    skipped = len(load_jsonl(path)) - len(cases)
    predicted = tag([r.tokens for r in cases]) if cases else []
    failures = [r.id for r, tags in zip(cases, predicted, strict=True) if list(r.tags) != list(tags)]
    return rate(len(cases) - len(failures), len(cases), skipped=skipped, failed_ids=failures)
