"""The text-classification kind for every stage (tasks/kinds/base.py: `TaskKind`), built by
`tasks.kinds.kind_for`. Multi-label (params `task.multi_label`) is a property of this kind alone.

Each stage needs a few of these pieces: the heavy ones (torch, the classifier) are imported by the method
that uses them, so that importing the kind stays cheap for the stages that do not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.textclass import data
from tasks.kinds.textclass.data import TextExample
from tasks.kinds.textclass.params import (
    HINTS,
    TextclassIngestParams,
    TextclassParams,
    TextclassValidateParams,
)
from tasks.metrics import EvalReport
from tasks.params import BUILTIN_SOURCE, SEQUENCE_CLASSIFICATION, CleanParams, EvaluateParams, hint_for
from tasks.sentence import Sentence
from tasks.text import near_duplicate_key_of_text


@dataclass(frozen=True)
class TextClass:
    """Texts with one class each, or (`multi_label`) any set of classes; `labels`: task.labels (empty: those of
    the train split)."""

    labels: list[str]
    multi_label: bool
    class_weight: str = "none"  # train.class_weight: none | balanced (weights from the train split's counts)
    task: ClassVar[str] = SEQUENCE_CLASSIFICATION
    source_suffixes: ClassVar[tuple[str, ...]] = (".csv", ".jsonl")  # a source folder's batch files

    def check_source(self, params: TextclassIngestParams) -> None:
        if params.source == BUILTIN_SOURCE:
            raise ValueError(f"ingest.source {BUILTIN_SOURCE!r} is NER data; sequence-classification needs a CSV or "
                             "JSONL file (e.g. data/external/vader_tweets/tweets.csv) or a folder of train/dev/test "
                             "files")

    def source_reader(self, params: TextclassIngestParams) -> Callable[[Path], list[TextExample]]:
        """CSV or JSONL texts (`ingest.text_column`, `ingest.label_column`); multi-label: a CSV cell's labels
        split at `ingest.label_separator`."""
        separator = params.label_separator if self.multi_label else None
        return lambda path: data.read_examples(path, params.text_column, params.label_column, separator)

    def source_rows(self, params: TextclassIngestParams) -> Callable[[Path], Iterator[TextExample]]:
        separator = params.label_separator if self.multi_label else None
        return lambda path: data.iter_text_examples(path, params.text_column, params.label_column, separator)

    def read(self, path: Path) -> list[TextExample]:
        return data.load_examples(path)

    def clean(self, rows: list[TextExample], params: CleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[TextExample]:
        return data.clean_examples(rows, params, counts, keep_every_row)

    def near_duplicate_key(self, row: TextExample) -> tuple[str, ...]:
        return near_duplicate_key_of_text(row.text)

    def contract_tables(self, splits: dict[str, list[TextExample]], params: TextclassValidateParams,
                        counter=None) -> list:
        return data.contract_tables(splits, params, self.labels, counter)

    def contract_hint(self, check: str, checkpoint: str) -> str:
        return hint_for(HINTS, check, checkpoint)

    def data_profile(self, splits: dict[str, list[TextExample]]) -> dict:
        return data.data_profile(splits)

    def as_sentence(self, row: TextExample) -> Sentence:
        return data.as_sentence(row)

    def from_sentence(self, sentence: Sentence) -> TextExample:
        return data.as_example(sentence)

    def read_unlabelled(self, path: Path) -> list[Sentence]:
        return data.read_unlabelled(path)

    def training(self, train_file: Path):
        from tasks.kinds.textclass.kind import TextClassKind, balanced_weights, labels_in

        if self.labels and self.class_weight == "none":  # nothing to read from the train split
            return TextClassKind(list(self.labels), self.multi_label)
        examples = data.load_examples(train_file)
        labels = list(self.labels or labels_in(examples))
        weights = balanced_weights(examples, labels, self.multi_label) if self.class_weight == "balanced" else None
        return TextClassKind(labels, self.multi_label, weights)

    def evaluate(self, params: EvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
                 max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
        from tasks.kinds.textclass.evaluate import evaluate

        return evaluate(params, model_dir, test_path, predictions_path, max_length, device)

    def predictor(self, model_dir: Path, batch_size: int = 32, max_length: int | None = None):
        from tasks.kinds.textclass.predict import load

        return load(model_dir, batch_size, max_length)


def kind(params: TextclassParams) -> TextClass:
    return TextClass(list(params.task.labels), params.task.multi_label, params.train.class_weight)
