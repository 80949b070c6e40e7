"""A tagged sentence: an id, its tokens and one IOB2 tag per token.

The NER kind's record (tasks/kinds/ner/records.py: `NerRecord`), and the unit the augmenters work on
(tasks/augmenters/): a text-classification example travels through them as a sentence of "O" tags
(tasks/kinds/textclass/records.py: `as_sentence`, `as_example`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sentence:
    """One sentence. Invariant checked by the validate step, not here: len(tokens) == len(tags)."""

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        """The words joined by spaces (what the deterministic split hashes)."""
        return " ".join(self.tokens)

    def to_json(self) -> dict:
        row = {"id": self.id, "tokens": list(self.tokens), "tags": list(self.tags)}
        if self.meta:
            row["meta"] = self.meta
        return row
