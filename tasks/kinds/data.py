"""The data side of the TaskKind seam, as protocols: what the data stages (ingest, validate, clean, augment)
ask of a kind, and the few ways of reading rows that every stage shares.

No torch, no model, no engine here: a data stage's import closure, and so its dvc.yaml deps, holds no training
code (docs/DECISIONS.md, 77). Each data stage gets the view it runs and no more, so that editing the contract reruns
no augmentation: `DataKind` (ingest, augment), `CleaningKind` (clean), `ContractKind` (validate). The model side
is tasks/kinds/base.py (`ModelKind`); `TaskKind` there is all of them. Implementations:
`tasks.kinds.<kind>.datakind`, `.clean` and `.contract`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from tasks.params import CleanParams, IngestParams, ValidateParams
from tasks.sentence import Sentence

Row = TypeVar("Row")  # one labelled row of a split: a NerRecord, a TextExample


class RowKind(Protocol[Row]):
    """Reading a kind's rows, which every stage does: the split files between stages, the augmenters' adapter
    (augment; distill's transfer set) and a user's unlabelled text (distill)."""

    @property
    def task(self) -> str:
        """The params' `task` value this kind implements (also `EvalReport.task`)."""
        ...

    def read(self, path: Path) -> list[Row]:
        """The rows of one split file (`<data folder>/<split>.jsonl`)."""
        ...

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


class DataKind(RowKind[Row], Protocol[Row]):
    """One task kind as ingest and augment use it (sources, splits, the augmenters' adapter), built from the
    params by `tasks.kinds.data_kind_for`."""

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


class CleaningKind(DataKind[Row], Protocol[Row]):
    """One task kind as the clean stage uses it, built from the params by `tasks.kinds.cleaning_kind_for`."""

    def clean(self, rows: list[Row], params: CleanParams, counts: Counter, keep_every_row: bool = False
              ) -> list[Row]:
        """The kept, cleaned rows of one split; `counts` gets what was dropped or changed, by reason. An
        official dev/test split (`keep_every_row`) is normalized only: no row is dropped, what would have
        dropped one is counted as kept."""
        ...

    def near_duplicate_key(self, row: Row) -> tuple[str, ...]:
        """The key of the near-duplicate check (words ignoring case and punctuation); () when no word."""
        ...


class ContractKind(DataKind[Row], Protocol[Row]):
    """One task kind as the validate stages use it, built from the params by `tasks.kinds.contract_kind_for`."""

    def contract_tables(self, splits: dict[str, list[Row]], params: ValidateParams, counter=None) -> list:
        """(table, expectations) pairs of the data contract (tasks/contract.py) over all splits."""
        ...

    def contract_hint(self, check: str, checkpoint: str) -> str:
        """The params change that fixes or accepts a failed `check` at `checkpoint` (one line)."""
        ...

    def data_profile(self, splits: dict[str, list[Row]]) -> dict:
        """Numbers that describe the data (contract report, `dvc metrics diff`)."""
        ...
