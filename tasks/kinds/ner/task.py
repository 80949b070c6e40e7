"""The NER kind for every stage (tasks/kinds/base.py: `TaskKind`), built by `tasks.kinds.kind_for`.

Each stage needs a few of these pieces: the heavy ones (GX tables, torch, seqeval) are imported by the
method that uses them, so that importing the kind stays cheap for the stages that do not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.kinds.ner.params import (
    HINTS,
    NerCleanParams,
    NerEvaluateParams,
    NerIngestParams,
    NerParams,
    NerValidateParams,
)
from tasks.kinds.ner.records import NerRecord, iter_records, load_jsonl, read_records, read_untagged
from tasks.metrics import EvalReport
from tasks.params import TOKEN_CLASSIFICATION, hint_for
from tasks.sentence import Sentence
from tasks.text import near_duplicate_key_of_tokens


@dataclass(frozen=True)
class Ner:
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

    def read(self, path: Path) -> list[NerRecord]:
        return load_jsonl(path)

    def clean(self, rows: list[NerRecord], params: NerCleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[NerRecord]:
        from tasks.kinds.ner.clean import clean_split

        return clean_split(rows, params, counts, keep_every_row)

    def near_duplicate_key(self, row: NerRecord) -> tuple[str, ...]:
        return near_duplicate_key_of_tokens(row.tokens)

    def contract_tables(self, splits: dict[str, list[NerRecord]], params: NerValidateParams, counter=None) -> list:
        from tasks.kinds.ner.contract import contract_tables

        return contract_tables(splits, params, self.entity_types, counter)

    def contract_hint(self, check: str, checkpoint: str) -> str:
        return hint_for(HINTS, check, checkpoint)

    def data_profile(self, splits: dict[str, list[NerRecord]]) -> dict:
        from tasks.kinds.ner.contract import data_profile

        return data_profile(splits)

    def as_sentence(self, row: NerRecord) -> Sentence:
        return row  # a record is a tagged sentence already

    def from_sentence(self, sentence: Sentence) -> NerRecord:
        return sentence

    def read_unlabelled(self, path: Path) -> list[Sentence]:
        return read_untagged(path)

    def training(self, train_file: Path):
        from tasks.kinds.ner.kind import NerKind, entity_types_in

        return NerKind(self.entity_types or entity_types_in(load_jsonl(train_file)))

    def evaluate(self, params: NerEvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
                 max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
        from tasks.kinds.ner.evaluate import evaluate

        return evaluate(params, model_dir, test_path, predictions_path, max_length, device)

    def predictor(self, model_dir: Path, batch_size: int = 32, max_length: int | None = None):
        from tasks.kinds.ner.predict import load

        return load(model_dir, batch_size, max_length)


def kind(params: NerParams) -> Ner:
    return Ner(list(params.task.labels))
