"""The text-classification kind as the data stages see it (tasks/kinds/data.py: `DataKind`), built by
`tasks.kinds.data_kind_for`: reading a source (ingest), the splits and the augmenters' adapter (augment).
The clean stage's kind adds the cleaning rules (tasks/kinds/textclass/clean.py: `TextClassCleaning`), the
validate stages' the contract (tasks/kinds/textclass/contract.py: `TextClassContract`). Multi-label (params
`task.multi_label`) is a property of this kind alone.

The data side imports no training code (no torch, no classifier, no engine), so that editing the training loop
or the model reruns no data stage; and each data stage runs only its own rules, so that editing the contract
reruns no augmentation (docs/DECISIONS.md, 77).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.textclass.params import TextclassIngestParams, TextclassParams
from tasks.kinds.textclass.records import TextExample, TextRows, iter_text_examples, read_examples
from tasks.params import BUILTIN_SOURCE, SEQUENCE_CLASSIFICATION


@dataclass(frozen=True)
class TextClassData(TextRows):
    """Texts with one class each, or (`multi_label`) any set of classes; `labels`: task.labels (empty: those of
    the train split)."""

    labels: list[str]
    multi_label: bool
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
        return lambda path: read_examples(path, params.text_column, params.label_column, separator)

    def source_rows(self, params: TextclassIngestParams) -> Callable[[Path], Iterator[TextExample]]:
        separator = params.label_separator if self.multi_label else None
        return lambda path: iter_text_examples(path, params.text_column, params.label_column, separator)


def kind(params: TextclassParams) -> TextClassData:
    return TextClassData(list(params.task.labels), params.task.multi_label)
