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
            hint = " (BIOES tags? set ingest.tag_scheme: bioes)" if tag[:2] in {"E-", "S-", "L-", "U-"} else ""
            errors.append(f"token {i}: '{tag}' is not O, B-<type> or I-<type>{hint}")
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


TAG_SCHEMES = ("iob1", "iob2", "bioes")


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Convert a tag sequence from `scheme` to IOB2, the one scheme every later step uses.

    - iob1: I-X starts an entity unless it continues an X entity; B-X only separates two adjacent
      X entities. Every I-X that does not continue an X becomes B-X.
    - bioes (also BILOU): S-/U- = a one-token entity -> B-; E-/L- = the last token -> I-.
    Tags in no known shape are kept as they are, for the data contract to report with their record.
    Invariant: a valid sequence in `scheme` becomes a valid IOB2 sequence with the same entity spans.
    """
    if scheme == "iob2":
        return list(tags)
    if scheme == "iob1":
        return _iob1_to_iob2(tags)
    if scheme == "bioes":
        return [_bioes_tag_to_iob2(tag) for tag in tags]
    raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {TAG_SCHEMES}")


def _iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    converted, previous_entity = [], None
    for tag in tags:
        prefix, entity = split_tag(tag)
        if prefix == "I" and entity != previous_entity:
            tag = f"B-{entity}"
        converted.append(tag)
        previous_entity = entity if prefix in {"B", "I"} else None
    return converted


_BIOES_TO_IOB2 = {"S": "B", "U": "B", "E": "I", "L": "I", "B": "B", "I": "I"}


def _bioes_tag_to_iob2(tag: str) -> str:
    prefix, sep, entity = tag.partition("-")
    if sep and entity and prefix in _BIOES_TO_IOB2:
        return f"{_BIOES_TO_IOB2[prefix]}-{entity}"
    return tag
