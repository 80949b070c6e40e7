"""The TaskKind seam: what differs between NER and text classification, as protocols.

A stage gets its kind once (`tasks.kinds.kind_for(params)`) and then calls only these methods: reading the
source and the splits (ingest, every later stage), cleaning, the data contract's tables (validate), the
augmenters' adapter (augment), training (`TrainingKind`: model, encoding, loss, dev score; train) and
evaluation (an `EvalReport` under the kind's names; evaluate) and inference on a saved model
(`ModelPredictor`: `flowtune predict`, `flowtune serve`; built by `tasks.kinds.predictor_for(model_dir)`, which
reads the kind from the model's config). Implementations: `tasks.kinds.ner.task.Ner` and
`tasks.kinds.textclass.task.TextClass`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.engine import Example
from tasks.metrics import EvalReport
from tasks.params import CleanParams, EvaluateParams, IngestParams, TrainParams, ValidateParams
from tasks.sentence import Sentence

Row = TypeVar("Row")  # one labelled row of a split: a NerRecord, a TextExample


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


Item = str | list[str]  # an input to predict: a text, or a sentence already split into tokens


class ModelPredictor(Protocol):
    """A saved model (or a variant of it) ready to answer, for `flowtune predict` and `flowtune serve`: what
    either does per kind lives behind this. Built by `tasks.kinds.predictor_for(model_dir)`."""

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


class TaskKind(Protocol[Row]):
    """One task kind for every stage, built from the params by `tasks.kinds.kind_for`."""

    @property
    def task(self) -> str:
        """The params' `task` value this kind implements (also `EvalReport.task`)."""
        ...

    # ------------------------------------------------------------------ ingest
    def check_source(self, params: IngestParams) -> None:
        """Raise ValueError when `ingest.source` cannot hold this kind's data (before anything is read)."""
        ...

    def source_reader(self, params: IngestParams) -> Callable[[Path], list[Row]]:
        """Path -> rows of a user-supplied file (CoNLL/JSONL records, CSV/JSONL texts)."""
        ...

    def source_rows(self, params: IngestParams) -> Callable[[Path], Iterable[Row]]:
        """`source_reader` a row at a time, without its check of unique ids (it needs every id; the import
        step checks them with 8 bytes a row): the import of a large source holds no more than a row."""
        ...

    @property
    def source_suffixes(self) -> tuple[str, ...]:
        """The file name endings of a source folder's batch files this kind reads (`.conll`, `.csv`, ...);
        the import step ignores (and reports) any other file there."""
        ...

    # ------------------------------------------------------------------ every stage: the splits between stages
    def read(self, path: Path) -> list[Row]:
        """The rows of one split file (`<data folder>/<split>.jsonl`)."""
        ...

    # ------------------------------------------------------------------ clean
    def clean(self, rows: list[Row], params: CleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[Row]:
        """The kept, cleaned rows of one split; `counts` gets what was dropped or changed, by reason. An
        official dev/test split (`keep_every_row`) is normalized only: no row is dropped, what would have
        dropped one is counted as kept."""
        ...

    def near_duplicate_key(self, row: Row) -> tuple[str, ...]:
        """The key of the near-duplicate check (words ignoring case and punctuation); () when no word."""
        ...

    # ------------------------------------------------------------------ validate
    def contract_tables(self, splits: dict[str, list[Row]], params: ValidateParams, counter=None) -> list:
        """(table, expectations) pairs of the data contract (tasks/contract.py) over all splits."""
        ...

    def contract_hint(self, check: str, checkpoint: str) -> str:
        """The params change that fixes or accepts a failed `check` at `checkpoint` (one line)."""
        ...

    def data_profile(self, splits: dict[str, list[Row]]) -> dict:
        """Numbers that describe the data (contract report, `dvc metrics diff`)."""
        ...

    # ------------------------------------------------------------------ augment
    def as_sentence(self, row: Row) -> Sentence:
        """The row as a tagged sentence for the augmenters (tasks/augmenters/)."""
        ...

    def from_sentence(self, sentence: Sentence) -> Row:
        """Back from an (augmented) sentence."""
        ...

    # ------------------------------------------------------------------ distill
    def read_unlabelled(self, path: Path) -> list[Sentence]:
        """A user's unlabelled text (`compress.transfer_text`) as untagged sentences, ids naming file and line:
        NER reads .txt (a sentence per line, split at whitespace), .jsonl (`tokens`) or CoNLL (first column);
        a classifier .txt (a text per line), .csv or .jsonl (`text` column). Errors name the file and line."""
        ...

    # ------------------------------------------------------------------ train
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
