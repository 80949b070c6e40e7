"""The NER kind as the model stages see it (train, evaluate, teacher_logits, distill, compress, the label
audit; tasks/kinds/base.py: `ModelKind`), built by `tasks.kinds.model_kind_for`.

This side reads rows (tasks/kinds/ner/records.py) but imports no cleaning, contract or augmentation code, so
that editing those never reruns training (docs/DECISIONS.md, 77). torch, transformers and seqeval are imported
by the method that uses them: distill resolves the kind only when it is turned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.ner.params import NerEvaluateParams, NerParams
from tasks.kinds.ner.records import NerRows, load_jsonl
from tasks.metrics import EvalReport
from tasks.params import TOKEN_CLASSIFICATION


@dataclass(frozen=True)
class NerModel(NerRows):
    """Token classification over `entity_types` (task.labels; empty: those of the train split)."""

    entity_types: list[str]
    task: ClassVar[str] = TOKEN_CLASSIFICATION

    def training(self, train_file: Path):
        from tasks.kinds.ner.training import NerTraining, entity_types_in

        return NerTraining(self.entity_types or entity_types_in(load_jsonl(train_file)))

    def evaluate(self, params: NerEvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
                 max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
        from tasks.kinds.ner.evaluate import evaluate

        return evaluate(params, model_dir, test_path, predictions_path, max_length, device)

    def predictor(self, model_dir: Path, batch_size: int = 32, max_length: int | None = None):
        from tasks.kinds.ner.predict import load

        return load(model_dir, batch_size, max_length)


def kind(params: NerParams) -> NerModel:
    return NerModel(list(params.task.labels))
