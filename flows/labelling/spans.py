"""Between Label Studio's character spans over `" ".join(tokens)` and our tokens with IOB2 tags."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

from tasks.iob import split_tag


class SpanError(ValueError):
    """An annotation that cannot become tags: off token boundaries, overlapping, or an unknown label."""


def token_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each token in the tokens joined by single spaces (the text Label Studio shows)."""
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    return offsets


def tags_to_spans(tokens: Sequence[str], tags: Sequence[str]) -> list[dict]:
    """Entity spans of IOB2 tags as Label Studio `labels` values ({start, end, text, labels}); an I-X that
    does not continue an X starts an entity, as seqeval reads it."""
    offsets, text = token_offsets(tokens), " ".join(tokens)
    spans: list[dict] = []
    current: tuple[str, int, int] | None = None
    for (start, end), tag in zip(offsets, tags, strict=True):
        prefix, entity = split_tag(tag)
        if entity is not None and prefix == "I" and current and current[0] == entity:
            current = (entity, current[1], end)
            continue
        if current:
            spans.append(current)
        current = (entity, start, end) if entity is not None else None
    if current:
        spans.append(current)
    return [{"start": s, "end": e, "text": text[s:e], "labels": [entity]} for entity, s, e in spans]


def spans_to_tags(tokens: Sequence[str], spans: Sequence[dict], entity_types: Sequence[str]) -> list[str]:
    """IOB2 tags from spans; SpanError naming the span when it is off token boundaries, overlaps another, or
    carries a label that is not one of `entity_types`."""
    offsets = token_offsets(tokens)
    starts = {start: i for i, (start, _) in enumerate(offsets)}
    ends = {end: i for i, (_, end) in enumerate(offsets)}
    tags = ["O"] * len(tokens)
    for span in sorted(spans, key=lambda s: s["start"]):
        labels = span.get("labels") or []
        where = f"span {span['start']}-{span['end']} {span.get('text', '')!r}"
        if len(labels) != 1 or labels[0] not in entity_types:
            raise SpanError(f"{where}: label {labels} is not one of {list(entity_types)}")
        first, last = starts.get(span["start"]), ends.get(span["end"])
        if first is None or last is None or last < first:
            raise SpanError(f"{where}: does not start and end on token boundaries")
        if any(tag != "O" for tag in tags[first:last + 1]):
            raise SpanError(f"{where}: overlaps another span")
        tags[first:last + 1] = [f"B-{labels[0]}"] + [f"I-{labels[0]}"] * (last - first)
    return tags


def entity_types_of(tags: Sequence[str]) -> list[str]:
    """The entity types of an IOB2 tag set, in first-seen order (`task.labels` of an NER params file)."""
    types: list[str] = []
    for tag in tags:
        entity = split_tag(tag)[1]
        if entity is not None and entity not in types:
            types.append(entity)
    return types


def labelling_config(kind: str, labels: Sequence[str], multi_label: bool = False) -> str:
    """Label Studio's labelling interface: NER `<Labels>` over the text, classification `<Choices>`."""
    if kind == "ner":
        options = "".join(f"<Label value={quoteattr(t)}/>" for t in entity_types_of(labels) or labels)
        return (f'<View><Labels name="label" toName="text">{options}</Labels>'
                '<Text name="text" value="$text" granularity="word"/></View>')
    choice = "multiple" if multi_label else "single"
    options = "".join(f"<Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View><Text name="text" value="$text"/>'
            f'<Choices name="label" toName="text" choice="{choice}">{options}</Choices></View>')
