"""Real benchmark data passes its contract: WNUT-16 (the default) and WNUT-17 with its official splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.basemodel import contract_piece_counter
from tasks.ingest import read_splits, resolve_source
from tasks.kinds.ner.contract import validate_records
from tasks.params import load_params
from tests.helpers import ROOT, kind

PARAMS = load_params(ROOT / "params.yaml")
WNUT17_TYPES = ["person", "location", "group", "creative-work", "corporation", "product"]


def failures(outcomes) -> list[str]:
    """The expectations that would stop the run on raw data with the default params."""
    return [o.describe() for o in outcomes if not o.success and o.check not in PARAMS.validate_.soft_checks("raw")]


def test_default_wnut16_passes_with_its_reference_profile(tmp_path: Path):
    splits, _ = read_splits(resolve_source(PARAMS.ingest.source), PARAMS.ingest, kind())
    outcomes = validate_records(splits, PARAMS.validate_, PARAMS.task.labels, contract_piece_counter(PARAMS),
                                tmp_path / "docs")
    assert failures(outcomes) == []
    assert (tmp_path / "docs" / "index.html").exists()


@pytest.mark.slow
def test_wnut17_official_splits_pass():
    splits, _ = read_splits(ROOT / "data" / "external" / "wnut17", PARAMS.ingest, kind())
    assert {s: len(rs) for s, rs in splits.items()} == {"train": 3394, "dev": 1009, "test": 1287}
    params = PARAMS.validate_.model_copy(update={"reference_profile": None})
    assert failures(validate_records(splits, params, WNUT17_TYPES, contract_piece_counter(PARAMS))) == []
