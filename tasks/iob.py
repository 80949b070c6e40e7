"""IOB2 tag rules as pure functions."""

from __future__ import annotations

from collections.abc import Sequence


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-person' -> ('B', 'person'); 'O' -> ('O', None). Unknown shapes -> (tag, None)."""
    if tag == "O":
        return "O", None
    prefix, sep, entity = tag.partition("-")
    if sep and prefix in {"B", "I"} and entity:
        return prefix, entity
    return tag, None


def iob2_errors(tags: Sequence[str]) -> list[str]:
    """Describe every IOB2 violation: malformed tags and an I-X not preceded by B-X or I-X.

    Invariant: returns [] exactly when the sequence is valid IOB2.
    """
    errors = []
    previous_entity: str | None = None
    for i, tag in enumerate(tags):
        prefix, entity = split_tag(tag)
        if prefix == "I" and entity != previous_entity:
            before = tags[i - 1] if i else "sentence start"
            errors.append(f"token {i}: '{tag}' follows '{before}' (expected B-{entity} first)")
        elif prefix not in {"B", "I", "O"}:
            errors.append(f"token {i}: '{tag}' is not O, B-<type> or I-<type>")
        previous_entity = entity if prefix in {"B", "I"} else None
    return errors


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans as (type, start, end_exclusive) from a valid IOB2 sequence."""
    spans = []
    start, current = 0, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, entity = split_tag(tag)
        if current is not None and (prefix != "I" or entity != current):
            spans.append((current, start, i))
            current = None
        if prefix == "B":
            start, current = i, entity
    return spans


def label_list(entity_types: Sequence[str]) -> list[str]:
    """The tag inventory for entity types, in a stable order: O, then B-/I- per type."""
    labels = ["O"]
    for entity in entity_types:
        labels += [f"B-{entity}", f"I-{entity}"]
    return labels
