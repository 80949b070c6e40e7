"""Text classification (one label per text, or a label set): metrics, the model, encoding, prediction.

- Data: `TextExample`s (tasks/kinds/textclass/records.py: CSV/JSONL reading).
- Metrics (pure functions): accuracy, per-class and macro precision/recall/F1, a confusion table and
  the expected calibration error of the predicted class's probability.
- Model: `AutoModelForSequenceClassification`; a text longer than `max_length` pieces is truncated (a
  sequence classifier sees one window). Training is the shared skeleton (tasks/train.py: `fit`) with
  this kind's pieces (tasks/kinds/textclass/training.py), selecting the epoch by dev macro-F1.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.basemodel import resolve_base_model
from tasks.engine import Example, autocast, collate, model_device
from tasks.io import atomic_write_text
from tasks.kinds.textclass.records import LABEL_JOIN, TextExample
from tasks.progress import Progress

MULTI_LABEL = "multi_label_classification"  # transformers' problem_type of a multi-label classifier
THRESHOLD = 0.5  # a multi-label classifier predicts every class at or above this probability

# ---------------------------------------------------------------- metrics


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 (with support), and a gold x predicted table.

    Macro averages weigh every class in `labels` equally, including classes absent from `gold` (their
    recall is 0 by convention here, as in scikit-learn's `zero_division=0`).
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    per_class = {}
    for label in labels:
        true_positive, support = confusion[label][label], sum(confusion[label].values())
        predicted_as = sum(confusion[g][label] for g in labels)
        per_class[label] = _prf(true_positive, predicted_as - true_positive, support - true_positive)
    macro = {k: sum(c[k] for c in per_class.values()) / len(labels) for k in ("precision", "recall", "f1")}
    correct = sum(confusion[label][label] for label in labels)
    return {"accuracy": _ratio(correct, len(gold)), "macro_precision": macro["precision"],
            "macro_recall": macro["recall"], "macro_f1": macro["f1"], "per_class": per_class,
            "confusion": confusion, "examples": len(gold)}


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the bins' sizes.

    0 for a perfectly calibrated model; a model that says 0.9 and is right half the time scores 0.4.
    """
    if not confidence:
        return 0.0
    total, error = len(confidence), 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if low < c <= high or (b == 0 and c == 0.0)]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            mean_confidence = sum(confidence[i] for i in members) / len(members)
            error += len(members) / total * abs(accuracy - mean_confidence)
    return error


# ---------------------------------------------------------------- model


def encode_texts(tokenizer, examples: Sequence[TextExample], max_length: int,
                 label2id: dict[str, int] | None = None, multi_label: bool = False) -> tuple[list[Example], int]:
    """Engine examples and how many texts were truncated. `labels`: the class id in position 0, or
    (multi-label) a 0/1 entry per class."""
    encoded = tokenizer([e.text for e in examples], truncation=False, add_special_tokens=True)["input_ids"]
    rows, truncated = [], 0
    for index, (example, ids) in enumerate(zip(examples, encoded, strict=True)):
        if len(ids) > max_length:
            truncated += 1
            ids = ids[: max_length - 1] + ids[-1:]  # keep the closing special token
        rows.append(Example(index, list(ids), [], label_row(example, label2id, multi_label)))
    return rows, truncated


def label_row(example: TextExample, label2id: dict[str, int] | None, multi_label: bool) -> list[int] | None:
    if label2id is None:
        return None
    if multi_label:
        return [int(label in example.labels) for label in label2id]
    return [label2id[example.label]]


def is_multi_label(model) -> bool:
    return getattr(model.config, "problem_type", None) == MULTI_LABEL


def load_classifier(params, labels: list[str], multi_label: bool = False):
    """The base encoder with a fresh sequence-classification head for `labels`, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_base_model(params.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        problem_type=MULTI_LABEL if multi_label else "single_label_classification",
        label2id={label: i for i, label in enumerate(labels)}, hidden_dropout_prob=params.dropout,
        attention_probs_dropout_prob=params.dropout, ignore_mismatched_sizes=True, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(base)


def predict_proba(model: torch.nn.Module, examples: Sequence[Example], batch_size: int, pad_id: int,
                  progress: Progress | None = None) -> torch.Tensor:
    """Class probabilities, one row per example, in the examples' order (multi-label: each class's own).
    `progress` counts the texts done."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[torch.Tensor | None] = [None] * len(examples)
    was_training, device = model.training, model_device(model)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate([examples[i] for i in chosen], pad_id).items()
                         if k != "labels"}
                with autocast(device):
                    logits = model(**batch).logits.float()
                probabilities = (logits.sigmoid() if is_multi_label(model) else logits.softmax(dim=-1)).cpu()
                for i, row in zip(chosen, probabilities, strict=True):
                    rows[i] = row
                if progress is not None:
                    progress.advance(len(chosen))
    finally:
        model.train(was_training)
    return torch.stack(rows) if rows else torch.empty(0)  # type: ignore[arg-type]


def predicted_labels(probabilities: torch.Tensor, labels: Sequence[str], multi_label: bool) -> list[str]:
    """The most probable class per row, or (multi-label) every class at or above THRESHOLD, joined by `|`."""
    if multi_label:
        return [LABEL_JOIN.join(label for label, p in zip(labels, row, strict=True) if p >= THRESHOLD)
                for row in probabilities.tolist()]
    return [labels[i] for i in probabilities.argmax(dim=-1).tolist()] if len(probabilities) else []


def classification_metrics(gold: Sequence[str], probabilities: torch.Tensor, labels: list[str],
                           multi_label: bool = False) -> dict:
    """`scores` (or `multilabel_scores`) of the predicted classes, the expected calibration error of the
    decisions' probability, and `f1`: the headline score (macro-F1) that the gate and the registry read."""
    predicted = predicted_labels(probabilities, labels, multi_label)
    if multi_label:
        result = multilabel_scores(gold, predicted, labels)
        decided = probabilities.flatten().tolist()  # one yes/no decision per text and class
        truth = [label in g.split(LABEL_JOIN) for g in gold for label in labels]
        result["ece"] = expected_calibration_error([max(p, 1 - p) for p in decided],
                                                   [(p >= THRESHOLD) == t for p, t in zip(decided, truth, strict=True)])
    else:
        confidence = probabilities.max(dim=-1).values.tolist() if len(gold) else []
        result = scores(gold, predicted, labels)
        result["ece"] = expected_calibration_error(confidence, [p == g for p, g in zip(predicted, gold, strict=True)])
    return {"task": "sequence-classification", "multi_label": multi_label, "f1": result["macro_f1"],
            "precision": result["macro_precision"], "recall": result["macro_recall"], **result}


def multilabel_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Per class, one binary problem (does the text carry it?): precision/recall/F1 with support (texts
    that carry it) and a tp/fp/fn/tn table; macro and micro averages; accuracy = exact label-set match."""
    gold_sets = [set(g.split(LABEL_JOIN)) - {""} for g in gold]
    predicted_sets = [set(p.split(LABEL_JOIN)) - {""} for p in predicted]
    confusion = {label: Counter({"tp": 0, "fp": 0, "fn": 0, "tn": 0}) for label in labels}
    for g, p in zip(gold_sets, predicted_sets, strict=True):
        for label in labels:
            confusion[label][{(True, True): "tp", (False, True): "fp", (True, False): "fn",
                              (False, False): "tn"}[(label in g, label in p)]] += 1
    per_class = {label: _prf(c["tp"], c["fp"], c["fn"]) for label, c in confusion.items()}
    macro = {k: sum(c[k] for c in per_class.values()) / len(labels) for k in ("precision", "recall", "f1")}
    tp, fp, fn = (sum(c[k] for c in confusion.values()) for k in ("tp", "fp", "fn"))
    exact = sum(g == p for g, p in zip(gold_sets, predicted_sets, strict=True))
    return {"accuracy": _ratio(exact, len(gold)), "macro_precision": macro["precision"],
            "macro_recall": macro["recall"], "macro_f1": macro["f1"], "micro_f1": _prf(tp, fp, fn)["f1"],
            "per_class": per_class, "confusion": {label: dict(c) for label, c in confusion.items()},
            "examples": len(gold)}


def _prf(true_positive: int, false_positive: int, false_negative: int) -> dict:
    """Precision, recall, F1 and support (gold positives) of one binary problem."""
    precision = _ratio(true_positive, true_positive + false_positive)
    recall = _ratio(true_positive, true_positive + false_negative)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": true_positive + false_negative}


@dataclass(frozen=True)
class SavedClassifier:
    """A saved classifier ready to classify texts (`flowtune predict`): a multi-label one predicts label
    sets joined by LABEL_JOIN, and reads gold label sets joined the same way."""

    model: Any
    tokenizer: Any
    labels: list[str]  # the classes in id order
    multi_label: bool

    @classmethod
    def load(cls, model_dir: Path) -> SavedClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        from tasks.variants import load_model

        model = load_model(model_dir, AutoModelForSequenceClassification)
        return cls(model, tokenizer, [model.config.id2label[i] for i in range(model.config.num_labels)],
                   is_multi_label(model))

    @property
    def label_separator(self) -> str | None:
        """How an input cell holds several labels; None: one label per text."""
        return LABEL_JOIN if self.multi_label else None

    def classify(self, examples: Sequence[TextExample], batch_size: int,
                 max_length: int) -> tuple[torch.Tensor, list[str]]:
        """Class probabilities (one row per example) and the predicted label (set) of each."""
        encoded, _ = encode_texts(self.tokenizer, examples, max_length)
        probabilities = predict_proba(self.model, encoded, batch_size, self.tokenizer.pad_token_id)
        return probabilities, predicted_labels(probabilities, self.labels, self.multi_label)

    def metrics(self, gold: Sequence[str], probabilities: torch.Tensor) -> dict:
        """`classification_metrics` of these predictions against gold labels."""
        return classification_metrics(gold, probabilities, self.labels, self.multi_label)


def write_predictions(path: Path, examples: Sequence[TextExample], predicted: Sequence[str],
                      probabilities: torch.Tensor, labels: Sequence[str]) -> None:
    """JSONL rows `{id, text, label, predicted, probabilities}`, written atomically."""
    rows = [json.dumps({"id": e.id, "text": e.text, "label": e.label, "predicted": p,
                        "probabilities": {label: round(float(x), 6) for label, x in zip(labels, row, strict=True)}},
                       ensure_ascii=False) for e, p, row in zip(examples, predicted, probabilities, strict=True)]
    atomic_write_text(Path(path), "".join(row + "\n" for row in rows))

