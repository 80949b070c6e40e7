"""Named-entity recognition (IOB2 token classification), as the training skeleton needs it.

Words are labelled on their first piece; long sentences are cut into windows, never truncated
(tasks/kinds/ner/modeling.py). The dev score is seqeval's strict IOB2 entity F1 over words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks.basemodel import resolve_base_model
from tasks.engine import IGNORE_INDEX, Example
from tasks.iob import label_list, split_tag
from tasks.kinds.base import Encoded, softmax_kl
from tasks.kinds.ner import audit
from tasks.kinds.ner.modeling import (
    build_examples,
    continuation_ids,
    encode_words,
    predict_label_ids,
    strict_f1,
    word_distributions,
)
from tasks.kinds.ner.params import NerTrainParams
from tasks.kinds.ner.records import NerRecord, load_jsonl
from tasks.params import TrainParams


def entity_types_in(records: Sequence[NerRecord]) -> list[str]:
    """Entity types used in the records, sorted (used when task.labels is empty)."""
    return sorted({entity for r in records for tag in r.tags if (entity := split_tag(tag)[1])})


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of logits [batch, pieces, classes] against labels [batch, pieces]."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")


@dataclass(frozen=True)
class NerTraining:
    """Token classification over `entity_types` (labels: O, then B-/I- per type)."""

    entity_types: Sequence[str]
    score_name: ClassVar[str] = "dev_f1"
    lora_task_type: ClassVar[str] = "TOKEN_CLS"
    task_kind: ClassVar[str] = "ner"

    @property
    def labels(self) -> list[str]:
        return label_list(self.entity_types)

    def read(self, path: Path) -> list[NerRecord]:
        return load_jsonl(path)

    def check_labels(self, rows: Sequence[NerRecord]) -> None:
        self.label_ids(rows)

    def label_ids(self, records: Sequence[NerRecord]) -> list[list[int]]:
        """Tag ids per record; a tag outside the label list is an error naming the record and tag."""
        label2id = {label: i for i, label in enumerate(self.labels)}
        result = []
        for record in records:
            unknown = [tag for tag in record.tags if tag not in label2id]
            if unknown:
                raise ValueError(
                    f"record {record.id}: tag {unknown[0]!r} is not in the label list "
                    f"{list(label2id)} (check task.labels)"
                )
            result.append([label2id[tag] for tag in record.tags])
        return result

    def load_model(self, params: TrainParams):
        """The base encoder with a fresh token-classification head, and its fast tokenizer."""
        base = resolve_base_model(params.base_model)
        tokenizer = AutoTokenizer.from_pretrained(base)
        if not tokenizer.is_fast:
            raise ValueError(f"{base}: a fast tokenizer (tokenizer.json) is needed for word alignment")
        labels = self.labels
        model = AutoModelForTokenClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            hidden_dropout_prob=params.dropout,
            attention_probs_dropout_prob=params.dropout,
            # A fine-tuned checkpoint with another label set may serve as base: re-initialise its head.
            ignore_mismatched_sizes=True,
            use_safetensors=True,  # never unpickle a .bin (arbitrary code on load)
        )
        return model, tokenizer

    def encode(self, tokenizer, rows: Sequence[NerRecord], params: NerTrainParams, with_labels: bool) -> Encoded:
        """Tokenize once into cached windows; every epoch reuses them."""
        labels = self.label_ids(rows) if with_labels else None
        # "Label all pieces": a word's later pieces learn its I- label instead of being ignored.
        continuation = continuation_ids(self.labels) if with_labels and params.label_all_pieces else None
        pieces = encode_words(tokenizer, [r.tokens for r in rows])
        return Encoded(build_examples(tokenizer, pieces, params.max_length, labels, continuation))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return token_cross_entropy(logits, labels)

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> torch.Tensor:
        """The teacher term over the labelled pieces (a word's first piece), those the cross-entropy sums over."""
        labelled = labels[:, : student.shape[1]] != IGNORE_INDEX
        return softmax_kl(student[labelled], teacher[labelled], temperature).sum()

    def dev_score(self, model, examples: Sequence[Example], rows: Sequence[NerRecord], batch_size: int,
                  pad_id: int) -> float | None:
        """Strict IOB2 entity F1 on dev over words."""
        if not rows:
            return None
        predicted = predict_label_ids(model, examples, [len(r.tokens) for r in rows], batch_size, pad_id)
        labels = self.labels
        return strict_f1([list(r.tags) for r in rows], [[labels[i] for i in row] for row in predicted])

    def distributions(self, model, examples: Sequence[Example], rows: Sequence[NerRecord], batch_size: int,
                      pad_id: int) -> list[np.ndarray]:
        """Per sentence, the softmax over the tags of each word ([words, labels])."""
        return word_distributions(model, examples, [len(r.tokens) for r in rows], batch_size, pad_id)

    def label_issues(self, rows: Sequence[NerRecord], distributions: Sequence[np.ndarray]) -> list[dict]:
        return audit.label_issues(rows, distributions, self.labels)
