"""The NER kind as the data stages see it (tasks/kinds/data.py: `DataKind`), built by
`tasks.kinds.data_kind_for`: reading a source (ingest), the splits and the augmenters' adapter (augment).
The clean stage's kind adds the cleaning rules (tasks/kinds/ner/clean.py: `NerCleaning`), the validate
stages' the contract (tasks/kinds/ner/contract.py: `NerContract`).

The data side imports no training code (no torch, no model head, no engine), so that editing the training loop
or the model reruns no data stage; and each data stage runs only its own rules, so that editing the contract
reruns no augmentation (docs/DECISIONS.md, 77).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.ner.params import NerIngestParams, NerParams
from tasks.kinds.ner.records import NerRecord, NerRows, iter_records, read_records
from tasks.params import TOKEN_CLASSIFICATION


@dataclass(frozen=True)
class NerData(NerRows):
    """Sentences of tokens with IOB2 tags over `entity_types` (task.labels; empty: those of the train split)."""

    entity_types: list[str]
    task: ClassVar[str] = TOKEN_CLASSIFICATION
    # A source folder's batch files; `.txt` is not one (notes and READMEs live beside data as .txt).
    source_suffixes: ClassVar[tuple[str, ...]] = (".conll", ".jsonl")

    def check_source(self, params: NerIngestParams) -> None:
        """Any CoNLL/JSONL source, and the builtin WNUT-16 set, hold NER data."""

    def source_reader(self, params: NerIngestParams) -> Callable[[Path], list[NerRecord]]:
        """CoNLL or JSONL records (`ingest.format`), tags converted to IOB2 from `ingest.tag_scheme`."""
        return lambda path: read_records(path, params.format, params.tag_scheme)

    def source_rows(self, params: NerIngestParams) -> Callable[[Path], Iterator[NerRecord]]:
        return lambda path: iter_records(path, params.format, params.tag_scheme)


def kind(params: NerParams) -> NerData:
    return NerData(list(params.task.labels))
