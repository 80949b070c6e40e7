"""Task kinds: what differs between NER and text classification, behind one seam.

The training skeleton (tasks/train.py: `fit`) is the same for every kind; a `TaskKind` brings the
pieces that differ: how rows are read and checked, the model and its head, how rows become engine
examples, the loss, and the dev score that picks the epoch. Today it holds only what training needs;
reading, cleaning, the data contract and evaluation are to move behind it later.

One implementation per kind: `tasks.kinds.ner.NerKind`, `tasks.kinds.textclass.TextClassKind`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.engine import Example
from tasks.params import TrainParams

Row = TypeVar("Row")  # one labelled row of a split: a NerRecord, a TextExample


@dataclass(frozen=True)
class Encoded:
    """Rows turned into engine examples, with counts about the encoding worth reporting in train.json."""

    examples: list[Example]
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"truncated_texts": 3}


class TaskKind(Protocol[Row]):
    """The kind-specific pieces of training; everything else (loop, LoRA, saving) is shared."""

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

    def dev_score(self, model: torch.nn.Module, examples: Sequence[Example], rows: Sequence[Row],
                  batch_size: int, pad_id: int) -> float | None:
        """The score that picks the best epoch (higher is better); None when there are no dev rows."""
        ...
