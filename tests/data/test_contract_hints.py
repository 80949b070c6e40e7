"""The checks each kind's contract runs are the kind's check names (each with a hint), and a failed contract
ends every failed check with the params change that fixes or accepts it."""

from __future__ import annotations

import json
import re
from importlib import import_module
from pathlib import Path

import pytest

from tasks import validate
from tasks.io import write_jsonl
from tasks.kinds.ner.records import NerRecord
from tasks.kinds.textclass.records import TextExample
from tasks.params import load_params
from tests.helpers import ROOT, kind

PARAMS_FILES = {"ner": "params.yaml", "textclass": "params-sentiment.yaml"}
TASKS = {"ner": "token-classification", "textclass": "sequence-classification"}


def rows(kind_name: str, split: str) -> list:
    if kind_name == "ner":
        return [NerRecord(f"{split}:{i}", ("Alice", "in", f"Rome{i}"), ("B-person", "O", "B-geo-loc"))
                for i in range(3)]
    return [TextExample(f"{split}:{i}", f"a lovely day {i}", "positive") for i in range(3)]


def check_names(tables: dict) -> set[str]:
    return {expectation.meta["check"] for _, expectations in tables.values() for expectation in expectations}


@pytest.mark.parametrize("kind_name", list(PARAMS_FILES))
def test_the_contract_runs_exactly_the_kinds_named_checks(kind_name: str, tmp_path: Path):
    """Every check the contract can run (reference profile and sub-word bound on) is a name `validate.soft`
    accepts and has a hint."""
    params = load_params(ROOT / PARAMS_FILES[kind_name]).validate_
    if kind_name == "ner":
        profile = tmp_path / "profile.json"
        profile.write_text(json.dumps({"entity_share": {"person": 0.5, "geo-loc": 0.5}}))
        params = params.model_copy(update={"reference_profile": str(profile)})
    splits = {split: rows(kind_name, split) for split in ("train", "dev", "test")}
    module = import_module(f"tasks.kinds.{kind_name}.params")
    assert check_names(kind(TASKS[kind_name]).contract_tables(splits, params)) == set(module.CHECKS) == set(
        module.HINTS)


def test_a_failed_check_ends_with_its_fix(tmp_path: Path):
    """A leaked dev sentence and an I- after O on raw data: each failure's examples, then one `fix:` line."""
    params = load_params(ROOT / "params.yaml").validate_.model_copy(update={
        "min_sentences": 1, "max_subword_pieces": None, "reference_profile": None, "soft": {}})
    leaked = NerRecord("dev.conll:3", ("Bob", "in", "Rome"), ("B-person", "O", "B-geo-loc"))
    broken = NerRecord("train.conll:9", ("in", "Paris"), ("O", "I-geo-loc"))
    write_jsonl(tmp_path / "train.jsonl", [NerRecord("train.conll:1", leaked.tokens, leaked.tags), broken])
    write_jsonl(tmp_path / "dev.jsonl", [leaked])
    write_jsonl(tmp_path / "test.jsonl", rows("ner", "test"))
    with pytest.raises(validate.ContractError) as info:
        validate.run(params, tmp_path, tmp_path / "report.json", checkpoint="raw", kind=kind())
    message = str(info.value)
    assert re.search(r"- iob2_valid .*\n    e\.g\. train\.conll:9: .*\n    fix: an IOB1 \(BIOES\) source needs "
                     r"`ingest\.tag_scheme: iob1`.*`validate\.soft\.raw`.*`clean\.bio_repair`", message), message
    assert re.search(r"- no_leakage .*\n    e\.g\. dev\.conll:3: .*\n    fix: set `clean\.decontaminate_train: "
                     r"true`.*no_leakage in `validate\.soft\.raw`", message), message
    assert message.count("\n    fix: ") == json.loads((tmp_path / "report.json").read_text())["failed"]
