"""A saved model folder as a predictor of request items, for `flowtune serve`: the model's own predictor
(`tasks.kinds.saved.predictor_for`, of the kind its config records; tasks/kinds/base.py `ModelPredictor`).

An item is a text (a string) or a pre-split sentence (a list of tokens). Answers have the shapes
`flowtune predict --format jsonl` writes: a tagger `{"id", "tokens", "tags", "scores"}`, a classifier
`{"id", "text", "label", "probabilities"}`. Serve knows no kind: what it needs is the protocol below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

Item = str | list[str]


class Predictor(Protocol):
    """What serve uses of a `tasks.kinds.base.ModelPredictor`."""

    kind: str  # "ner" | "textclass": the task kind of the model
    answer_kind: str  # "tagger" | "classifier": what the answers hold (/readyz's `kind`, as it always was)

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        """One answer per item, in order; `ids` are echoed."""

    def describe(self, items: Sequence[Item], answers: Sequence[dict]) -> list[dict]:
        """Per item, statistics for monitoring; safe to call from another thread while `predict` runs."""


def load_predictor(model_dir: Path, batch_size: int, max_length: int | None = None) -> Predictor:
    """The folder's model, in eval mode, with the window length it was trained with unless given."""
    from tasks.kinds.saved import predictor_for

    return predictor_for(model_dir, batch_size, max_length)
