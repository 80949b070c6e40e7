"""Text classification (one label per text, or a label set), as the training skeleton needs it.

A text longer than `max_length` pieces is truncated (a sequence classifier sees one window); train.json
reports how many training texts were. The dev score is macro-F1 over the classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from tasks.engine import IGNORE_INDEX, Example
from tasks.kinds.base import Encoded, bernoulli_kl, softmax_kl
from tasks.kinds.textclass import audit
from tasks.kinds.textclass.modeling import classification_metrics, encode_texts, load_classifier, predict_proba
from tasks.kinds.textclass.records import TextExample, load_examples
from tasks.params import TrainParams


def labels_in(examples: Sequence[TextExample]) -> list[str]:
    """Classes used in the examples, sorted (used when task.labels is empty)."""
    return sorted({label for e in examples for label in e.labels})


def balanced_weights(examples: Sequence[TextExample], labels: Sequence[str], multi_label: bool) -> tuple[float, ...]:
    """Per class, scikit-learn's "balanced" weight n / (classes x count); multi-label: negatives / positives,
    the weight of that class's positives (BCE's pos_weight). A class absent from train weighs 1."""
    counts = Counter(label for e in examples for label in e.labels)
    total = len(examples)
    if multi_label:
        return tuple((total - counts[c]) / counts[c] if counts[c] else 1.0 for c in labels)
    return tuple(total / (len(labels) * counts[c]) if counts[c] else 1.0 for c in labels)


def class_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Summed cross-entropy of logits [batch, classes], each text weighted by its class's weight (if given);
    an example's class id sits in position 0 of its label row (the rest is padding)."""
    return F.cross_entropy(logits.float(), labels[:, 0], weight=weights, ignore_index=IGNORE_INDEX, reduction="sum")


def binary_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, pos_weights: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Summed binary cross-entropy of logits [batch, classes]: the label row starts with the example's 0/1
    vector over the classes, one yes/no decision each; `pos_weights` weigh each class's positives."""
    classes = logits.shape[-1]
    return F.binary_cross_entropy_with_logits(logits.float(), labels[:, :classes].float(), pos_weight=pos_weights,
                                              reduction="sum")


@dataclass(frozen=True)
class TextClassTraining:
    """Sequence classification into `labels`; `multi_label`: each text carries any subset of them."""

    labels: list[str]
    multi_label: bool = False
    class_weights: tuple[float, ...] | None = None  # per class, in `labels` order (train.class_weight: balanced)
    score_name: ClassVar[str] = "dev_macro_f1"
    lora_task_type: ClassVar[str] = "SEQ_CLS"
    task_kind: ClassVar[str] = "textclass"

    def read(self, path: Path) -> list[TextExample]:
        return load_examples(path)

    def check_labels(self, rows: Sequence[TextExample]) -> None:
        known = set(self.labels)
        for example in rows:
            # A single-label example must carry a label; a multi-label one may carry none.
            if not set(example.labels) <= known or not (self.multi_label or example.labels):
                raise ValueError(f"{example.id}: label {example.label!r} is not one of {self.labels}")

    def load_model(self, params: TrainParams):
        return load_classifier(params, self.labels, self.multi_label)

    def encode(self, tokenizer, rows: Sequence[TextExample], params: TrainParams, with_labels: bool) -> Encoded:
        label2id = {label: i for i, label in enumerate(self.labels)} if with_labels else None
        examples, truncated = encode_texts(tokenizer, rows, params.max_length, label2id, self.multi_label)
        metrics = {"truncated_texts": truncated}
        if self.class_weights:  # reported in train.json
            metrics["class_weights"] = dict(zip(self.labels, self.class_weights, strict=True))
        return Encoded(examples, metrics)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(self.class_weights, device=logits.device) if self.class_weights else None
        return (binary_cross_entropy if self.multi_label else class_cross_entropy)(logits, labels, weights)

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> torch.Tensor:
        """The teacher term over the texts: softmax KL for one label per text, per-class sigmoid KL for label sets."""
        if self.multi_label:
            return bernoulli_kl(student, teacher, temperature).sum()
        labelled = labels[:, 0] != IGNORE_INDEX
        return softmax_kl(student[labelled], teacher[labelled], temperature).sum()

    def dev_score(self, model, examples: Sequence[Example], rows: Sequence[TextExample], batch_size: int,
                  pad_id: int) -> float | None:
        """Macro-F1 on dev (every class weighs the same)."""
        if not rows:
            return None
        probabilities = predict_proba(model, examples, batch_size, pad_id)
        return classification_metrics([e.label for e in rows], probabilities, self.labels,
                                      self.multi_label)["macro_f1"]

    def distributions(self, model, examples: Sequence[Example], rows: Sequence[TextExample], batch_size: int,
                      pad_id: int) -> list[np.ndarray]:
        """Per text, its class probabilities (multi-label: each class's own)."""
        return list(predict_proba(model, examples, batch_size, pad_id).double().numpy())

    def label_issues(self, rows: Sequence[TextExample], distributions: Sequence[np.ndarray]) -> list[dict]:
        return audit.label_issues(rows, distributions, self.labels, self.multi_label)
