"""The text-classification kind as the model stages see it (train, evaluate, teacher_logits, distill, compress,
the label audit; tasks/kinds/base.py: `ModelKind`), built by `tasks.kinds.model_kind_for`.

This side reads rows (tasks/kinds/textclass/records.py) but imports no cleaning, contract or augmentation code,
so that editing those never reruns training (docs/DECISIONS.md, 77). torch and the classifier are imported by
the method that uses them: distill resolves the kind only when it is turned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.textclass.params import TextclassParams
from tasks.kinds.textclass.records import TextRows, load_examples
from tasks.metrics import EvalReport
from tasks.params import SEQUENCE_CLASSIFICATION, EvaluateParams


@dataclass(frozen=True)
class TextClassModel(TextRows):
    """A classifier into `labels` (task.labels; empty: those of the train split), one class per text or
    (`multi_label`) any set of them; `class_weight`: train.class_weight."""

    labels: list[str]
    multi_label: bool
    class_weight: str = "none"  # none | balanced (weights from the train split's counts)
    task: ClassVar[str] = SEQUENCE_CLASSIFICATION

    def training(self, train_file: Path):
        from tasks.kinds.textclass.training import TextClassTraining, balanced_weights, labels_in

        if self.labels and self.class_weight == "none":  # nothing to read from the train split
            return TextClassTraining(list(self.labels), self.multi_label)
        examples = load_examples(train_file)
        labels = list(self.labels or labels_in(examples))
        weights = balanced_weights(examples, labels, self.multi_label) if self.class_weight == "balanced" else None
        return TextClassTraining(labels, self.multi_label, weights)

    def evaluate(self, params: EvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
                 max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
        from tasks.kinds.textclass.evaluate import evaluate

        return evaluate(params, model_dir, test_path, predictions_path, max_length, device)

    def predictor(self, model_dir: Path, batch_size: int = 32, max_length: int | None = None):
        from tasks.kinds.textclass.predict import load

        return load(model_dir, batch_size, max_length)


def kind(params: TextclassParams) -> TextClassModel:
    return TextClassModel(list(params.task.labels), params.task.multi_label, params.train.class_weight)
