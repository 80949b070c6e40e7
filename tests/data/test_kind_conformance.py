"""What every task kind must do the same way, checked over each kind through the real stage functions.

Each kind gets small synthetic data of its own (CoNLL sentences for NER, labelled texts for text
classification), imported by its ingest reader; then:
- cleaning counts every change it makes: an exact duplicate and a row that differs only by a
  zero-width character are dropped and counted, and the normalisation is counted too;
- augmentation leaves dev and test byte-identical;
- the data contract names the bad row (a dev row copied into train).
A third kind (docs/ARCHITECTURE.md) joins by adding a row to KINDS.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks import augment, clean, ingest, validate
from tasks.contract import ContractError
from tasks.io import write_jsonl
from tasks.params import Params, load_params
from tests.helpers import ROOT, kind, synthetic_splits, synthetic_texts

ZERO_WIDTH = "\u200b"


@dataclass(frozen=True)
class Case:
    params_file: str
    task: str
    source: Callable[[Path], Path]  # writes the kind's synthetic source under a folder; its path
    with_zero_width: Callable[[object], object]  # the row with a zero-width character in its first word
    with_common_words: Callable[[object], object]  # the row with words WordNet has synonyms for ("big day")


KINDS = {
    "ner": Case("params.yaml", "token-classification", lambda folder: synthetic_splits(folder / "src", 60),
                lambda row: dataclasses.replace(row, tokens=(row.tokens[0] + ZERO_WIDTH, *row.tokens[1:])),
                lambda row: dataclasses.replace(row, tokens=("a", "big", "day", "for", row.tokens[0]),
                                                tags=("O", "O", "O", "O", row.tags[0]))),
    "textclass": Case("params-sentiment.yaml", "sequence-classification",
                      lambda folder: synthetic_texts(folder / "src.csv", 90),
                      lambda row: dataclasses.replace(row, text=row.text.replace(" ", ZERO_WIDTH + " ", 1)),
                      lambda row: dataclasses.replace(row, text=f"a big day for {row.text}")),
}


@pytest.fixture(scope="module", params=list(KINDS))
def imported(request, tmp_path_factory) -> tuple[Case, Params, object, Path]:
    """The kind's case, params, TaskKind, and a folder whose raw/ holds its imported splits."""
    case = KINDS[request.param]
    params, the_kind = load_params(ROOT / case.params_file), kind(case.task)
    folder = tmp_path_factory.mktemp(request.param)
    ingest.run(params.ingest.model_copy(update={"source": str(case.source(folder))}), folder / "raw", the_kind)
    return case, params, the_kind, folder


def test_cleaning_counts_every_change(imported, tmp_path: Path):
    case, params, the_kind, folder = imported
    train = the_kind.read(folder / "raw" / "train.jsonl")
    duplicate = dataclasses.replace(train[0], id="conformance-duplicate")
    messy = dataclasses.replace(case.with_zero_width(train[1]), id="conformance-zero-width")
    raw = tmp_path / "raw"
    for split in ("dev", "test"):
        write_jsonl(raw / f"{split}.jsonl", the_kind.read(folder / "raw" / f"{split}.jsonl"))
    write_jsonl(raw / "train.jsonl", [*train, duplicate, messy])

    counts = clean.run(params.clean, raw, tmp_path / "clean", tmp_path / "clean.json", the_kind)["splits"]["train"]
    kept = {row.id for row in the_kind.read(tmp_path / "clean" / "train.jsonl")}
    assert kept == {row.id for row in train}  # both injected rows dropped, every original kept
    dropped = sum(n for reason, n in counts.items() if reason.endswith("_dropped"))
    changed = sum(n for reason, n in counts.items() if reason not in {"input", "output"}
                  and not reason.endswith("_dropped"))
    assert counts["input"] - counts["output"] == dropped == 2, counts
    assert changed >= 1, f"the zero-width character's removal is not counted: {counts}"
    assert json.loads((tmp_path / "clean.json").read_text())["splits"]["train"] == counts


def test_augmentation_leaves_dev_and_test_byte_identical(imported, tmp_path: Path):
    case, params, the_kind, folder = imported
    data = tmp_path / "clean"
    for split in ("dev", "test"):
        write_jsonl(data / f"{split}.jsonl", the_kind.read(folder / "raw" / f"{split}.jsonl"))
    train = the_kind.read(folder / "raw" / "train.jsonl")
    write_jsonl(data / "train.jsonl", [*train, *(dataclasses.replace(case.with_common_words(row), id=f"common-{i}")
                                                 for i, row in enumerate(train[:5]))])
    synonyms_only = params.augment.model_copy(update={"methods": ["synonym"]})
    report = augment.run(synonyms_only, data, tmp_path / "augmented", tmp_path / "augment.json", kind=the_kind)
    assert report["added"] > 0, report  # the check below must not pass by writing nothing new
    for split in ("dev", "test"):
        assert (tmp_path / "augmented" / f"{split}.jsonl").read_bytes() == (data / f"{split}.jsonl").read_bytes(), split


def test_the_contract_names_the_bad_row(imported, tmp_path: Path):
    case, params, the_kind, folder = imported
    data = tmp_path / "data"
    splits = {split: the_kind.read(folder / "raw" / f"{split}.jsonl") for split in ("train", "dev", "test")}
    leaked = dataclasses.replace(splits["dev"][0], id="conformance-leaked-row")
    for split, rows in splits.items():
        write_jsonl(data / f"{split}.jsonl", rows + ([leaked] if split == "train" else []))
    checks = params.validate_.model_copy(update={"reference_profile": None})
    with pytest.raises(ContractError, match=r"no_leakage(.|\n)*conformance-leaked-row"):
        # after cleaning: on raw data a leak only warns, as clean.decontaminate_train removes it
        validate.run(checks, data, tmp_path / "contract.json", checkpoint="clean", kind=the_kind)
    assert json.loads((tmp_path / "contract.json").read_text())["success"] is False


@pytest.mark.parametrize("name", list(KINDS))
def test_a_new_batch_moves_no_imported_row(name: str, tmp_path: Path):
    """The kind's source as a growing folder (its file as the first batch, or its official splits), then a
    second batch of new rows in batches/: every row imported before keeps its split."""
    case = KINDS[name]
    params, the_kind = load_params(ROOT / case.params_file), kind(case.task)
    made = case.source(tmp_path / "made")
    folder = made if made.is_dir() else tmp_path / "growing"
    if not made.is_dir():
        folder.mkdir()
        made.rename(folder / f"first{made.suffix}")
    source = params.ingest.model_copy(update={"source": str(folder)})

    def splits_by_id() -> dict[str, str]:
        return {row.id: split for split in ("train", "dev", "test")
                for row in the_kind.read(tmp_path / "raw" / f"{split}.jsonl")}

    ingest.run(source, tmp_path / "raw", the_kind)
    before = splits_by_id()
    # The second batch: the kind's rows in its stored form, JSONL (every kind reads it), under new ids.
    last = sorted(p for p in folder.iterdir() if p.is_file())[-1]  # first.csv, or train.conll (after dev, test)
    rows = list(the_kind.source_rows(source)(last))
    write_jsonl(folder / "batches" / "more.jsonl", [dataclasses.replace(row, id=f"more-{row.id}") for row in rows])
    report = ingest.run(source, tmp_path / "raw", the_kind)
    after = splits_by_id()
    assert report["batches"][-1] == {"file": "batches/more.jsonl", "rows": len(rows),
                                     "splits": report["batches"][-1]["splits"]}
    assert len(after) == len(before) + len(rows)
    assert {row_id: after[row_id] for row_id in before} == before
