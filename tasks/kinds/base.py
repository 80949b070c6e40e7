"""The TaskKind seam: what differs between NER and text classification, as protocols.

A kind has two sides. The data side (tasks/kinds/data.py: `DataKind`, `CleaningKind`, `ContractKind`, built by
`tasks.kinds.data_kind_for`, `cleaning_kind_for`, `contract_kind_for`) reads the source and the splits, cleans,
builds the data contract's tables and adapts rows for the augmenters: the data stages (ingest, validate, clean,
augment) use it and import no training code. The model side (here: `ModelKind`, built by
`tasks.kinds.model_kind_for`) reads the splits, trains (`TrainingKind`: model, encoding,
loss, dev score; train, distill), evaluates (an `EvalReport` under the kind's names; evaluate, compress) and
predicts with a saved model (`ModelPredictor`: `flowtune predict`, `flowtune serve`; built by
`tasks.kinds.saved.predictor_for(model_dir)`, which reads the kind from the model's config): the model stages
use it and import no cleaning, contract or augmentation code. Each stage calls only its side's methods, so
its dvc.yaml deps are that side's files (docs/DECISIONS.md, 77). `TaskKind` is both sides in one object
(`tasks.kinds.kind_for`). Implementations: `tasks.kinds.<kind>.datakind`, `.modelkind` and `.kind`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.engine import Example
from tasks.kinds.data import CleaningKind, ContractKind, DataKind, Row, RowKind
from tasks.metrics import EvalReport
from tasks.params import EvaluateParams, TrainParams

# The data side's protocols too, so that `tasks.kinds.base` names every protocol of the seam.
__all__ = ["CleaningKind", "ContractKind", "DataKind", "Encoded", "ModelKind", "ModelPredictor", "Row", "RowKind",
           "TaskKind", "TrainingKind"]


@dataclass(frozen=True)
class Encoded:
    """Rows turned into engine examples, with counts about the encoding worth reporting in train.json."""

    examples: list[Example]
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"truncated_texts": 3}


class TrainingKind(Protocol[Row]):
    """The kind-specific pieces of training; everything else (loop, LoRA, saving) is shared."""

    @property
    def task_kind(self) -> str:
        """The kind's name ("ner" | "textclass": params' `task.kind`), recorded in the saved model's config."""
        ...

    @property
    def labels(self) -> list[str]:
        """The model's output labels in id order (also part of a checkpoint's identity)."""
        ...

    @property
    def score_name(self) -> str:
        """The dev score's key in train.json, e.g. "dev_f1"."""
        ...

    @property
    def lora_task_type(self) -> str:
        """peft's `TaskType` name for this kind's head, e.g. "TOKEN_CLS"."""
        ...

    def read(self, path: Path) -> list[Row]:
        """The rows of one split file (data_dir/train.jsonl, data_dir/dev.jsonl)."""
        ...

    def check_labels(self, rows: Sequence[Row]) -> None:
        """Raise ValueError naming the row when a label is not one of `labels` (before any training)."""
        ...

    def load_model(self, params: TrainParams) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The base encoder with a fresh head for `labels`, and its tokenizer."""
        ...

    def encode(self, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], params: TrainParams,
               with_labels: bool) -> Encoded:
        """Engine examples of the rows; label rows only `with_labels` (dev is scored, not trained on)."""
        ...

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed loss over the labelled positions of a batch (`engine.Loss`)."""
        ...

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> torch.Tensor:
        """Distillation's teacher term: KL(teacher || student) of the logits softened by `temperature`, summed
        over the positions `loss` sums over (`labels` says which); 0 when the student matches the teacher."""
        ...

    def dev_score(self, model: torch.nn.Module, examples: Sequence[Example], rows: Sequence[Row],
                  batch_size: int, pad_id: int) -> float | None:
        """The score that picks the best epoch (higher is better); None when there are no dev rows."""
        ...

    def distributions(self, model: torch.nn.Module, examples: Sequence[Example], rows: Sequence[Row],
                      batch_size: int, pad_id: int) -> list[np.ndarray]:
        """The model's probabilities over `labels` for each row (examples: `encode(..., with_labels=False)`):
        NER an array [words, labels] per sentence, a classifier [labels] per text. The label audit's input."""
        ...

    def label_issues(self, rows: Sequence[Row], distributions: Sequence[np.ndarray]) -> list[dict]:
        """Every row ranked by cleanlab from out-of-sample `distributions`, most likely mislabelled first:
        `{"id", "tokens" (NER) | "text" (textclass), "given", "suggested", "score", "flagged"}`; score: label
        quality in [0, 1], lower is more suspect; flagged: cleanlab's own filter calls it an issue."""
        ...


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) over the last axis, one value per position."""
    teacher_log = torch.log_softmax(teacher.float() / temperature, dim=-1)
    student_log = torch.log_softmax(student.float() / temperature, dim=-1)
    return (teacher_log.exp() * (teacher_log - student_log)).sum(-1)


def bernoulli_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-class KL of the yes/no probabilities sigmoid(teacher / T) and sigmoid(student / T), summed over the
    last axis: a multi-label head's classes are independent decisions, not one distribution. It is the binary
    cross-entropy against the teacher's probabilities minus their entropy (the same gradient, 0 at a match)."""
    teacher, student = teacher.float() / temperature, student.float() / temperature
    target = torch.sigmoid(teacher)
    cross = F.binary_cross_entropy_with_logits(student, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher, target, reduction="none")
    return (cross - entropy).sum(-1)


def ranked(findings: list[dict]) -> list[dict]:
    """Label-audit findings most suspect first: by score, then id (a stable order for equal scores)."""
    return sorted(findings, key=lambda finding: (finding["score"], str(finding["id"])))


Item = str | list[str]  # an input to predict: a text, or a sentence already split into tokens


class ModelPredictor(Protocol):
    """A saved model (or a variant of it) ready to answer, for `flowtune predict` and `flowtune serve`: what
    either does per kind lives behind this. Built by `tasks.kinds.saved.predictor_for(model_dir)`."""

    kind: str  # "ner" | "textclass": the kind recorded in the model's config
    answer_kind: str  # "tagger" | "classifier": what the answers hold, as serve's /readyz has always said
    labels: list[str]  # the model's output labels in id order (NER: IOB2 tags; textclass: classes)
    max_length: int  # sub-word pieces per window (NER windows long sentences; a classifier truncates)
    stdin_suffix: str  # the file type `--input -` reads from stdin (".conll", ".jsonl")

    def read_input(self, path: Path) -> tuple[list[Item], list[str], list | None]:
        """(items, ids, gold) of an input file: gold tag sequences / labels when the file carries them, else
        None. Errors name the file and line; gold labels the model does not know are an error."""
        ...

    def read_lines(self, lines: Sequence[str]) -> tuple[list[Item], list[str]]:
        """(items, ids) of plain text lines (blank ones skipped), ids `line:<n>`."""
        ...

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        """One answer per item, in order, `ids` echoed: NER `{"id", "tokens", "tags", "scores"}` (scores: each
        token's tag probability), textclass `{"id", "text", "label", "probabilities"}`; in batches of the
        predictor's batch size, long inputs windowed (NER) or truncated (textclass) at `max_length`."""
        ...

    def describe(self, items: Sequence[Item], answers: Sequence[dict]) -> list[dict]:
        """Per item, statistics for production monitoring: words, chars, pieces, unknown_pieces,
        fragmented_words, urls, emoji, non_latin, upper_words, confidence, min_confidence, predicted (list of
        str). Thread-safe: may run in another thread while `predict` runs (it has a tokenizer of its own)."""
        ...

    def write(self, answers: Sequence[dict], fmt: str | None, out: IO[str]) -> None:
        """Write answers as `flowtune predict --format fmt` does (None: the kind's default format)."""
        ...

    def score(self, gold: Sequence, answers: Sequence[dict]) -> str:
        """One line saying how the answers did against the input's gold (what predict prints on stderr)."""
        ...


class ModelKind(RowKind[Row], Protocol[Row]):
    """One task kind as the model stages use it (train, evaluate, distill, compress, the label audit), built from
    the params by `tasks.kinds.model_kind_for`: rows (tasks/kinds/data.py: `RowKind`) and the model's pieces."""

    def training(self, train_file: Path) -> TrainingKind[Row]:
        """The training pieces, with the labels the params declare, else those the train split uses."""
        ...

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, params: EvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
                 max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
        """Score the saved model (a transformers folder or a variant, tasks/variants.py; on `device`, by default
        CUDA when there is one) on the test split: the report (the kind's headline, unit, group, title,
        predicts) and the (actual, predicted) pairs of the confusion plot; predictions are written to
        `predictions_path`. Raise `tasks.metrics.LabelSetMismatch` when the test data holds a label the
        model does not know."""
        ...

    # ------------------------------------------------------------------ predict, serve
    def predictor(self, model_dir: Path, batch_size: int = 32, max_length: int | None = None) -> ModelPredictor:
        """The saved model in `model_dir` (a transformers folder or a variant) ready to answer; `max_length`:
        by default the one it was trained with (its config)."""
        ...


class TaskKind(CleaningKind[Row], ContractKind[Row], ModelKind[Row], Protocol[Row]):
    """One whole task kind, data and model side, built from the params by `tasks.kinds.kind_for` (flows, tests and
    benchmarks; a stage asks for its side only)."""
