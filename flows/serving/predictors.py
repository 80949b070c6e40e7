"""A saved model folder as a predictor of request items, for `flowtune serve`.

An item is a text (a string) or a pre-split sentence (a list of tokens). Each predictor answers in the
shapes `flowtune predict --format jsonl` writes: a tagger `{"id", "tokens", "tags"}`, a classifier
`{"id", "text", "label", "probabilities"}`. What a folder holds (tagger or classifier) comes from its
config, as for `predict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

Item = str | list[str]


class Predictor(Protocol):
    kind: str  # "tagger" | "classifier": what the answers hold

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        """One answer per item, in order; `ids` are echoed."""


@dataclass
class Tagger:
    model: object
    tokenizer: object
    max_length: int
    batch_size: int
    kind: str = "tagger"

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        from tasks.kinds.ner.modeling import predict_tags

        sentences = [item.split() if isinstance(item, str) else list(item) for item in items]
        tags = predict_tags(self.model, self.tokenizer, sentences, self.batch_size, self.max_length)
        return [{"id": i, "tokens": tokens, "tags": predicted}
                for i, tokens, predicted in zip(ids, sentences, tags, strict=True)]


@dataclass
class Classifier:
    saved: object  # tasks.kinds.textclass.modeling.SavedClassifier
    max_length: int
    batch_size: int
    kind: str = "classifier"

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        from tasks.kinds.textclass.data import TextExample

        examples = [TextExample(i, item if isinstance(item, str) else " ".join(item), "")
                    for i, item in zip(ids, items, strict=True)]
        probabilities, chosen = self.saved.classify(examples, self.batch_size, self.max_length)
        labels = self.saved.labels
        return [{"id": e.id, "text": e.text, "label": label,
                 "probabilities": {name: round(float(p), 6) for name, p in zip(labels, row, strict=True)}}
                for e, row, label in zip(examples, probabilities, chosen, strict=True)]


def load_predictor(model_dir: Path, batch_size: int, max_length: int | None = None) -> Predictor:
    """The folder's model, in eval mode, with the window length it was trained with unless given."""
    from flows.predict_cli import is_sequence_classifier, trained_max_length

    length = max_length or trained_max_length(model_dir)
    if is_sequence_classifier(model_dir):
        from tasks.kinds.textclass.modeling import SavedClassifier

        return Classifier(SavedClassifier.load(model_dir), length, batch_size)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.variants import load_model

    model = load_model(model_dir, AutoModelForTokenClassification)
    return Tagger(model, AutoTokenizer.from_pretrained(model_dir), length, batch_size)
