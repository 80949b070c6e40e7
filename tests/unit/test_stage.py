"""Stage command lines: a user error is one readable line on stderr and exit status 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT


def run_stage(tmp_path: Path, module: str, *args: str, **params: dict) -> subprocess.CompletedProcess:
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, update in params.items():
        values[section].update(update)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_missing_source_file_is_one_line_naming_it(tmp_path: Path):
    result = run_stage(tmp_path, "tasks.ingest", ingest={"source": "data/external/nope.conll"})
    assert result.returncode == 1
    assert result.stderr.strip() == "ingest: error: data/external/nope.conll: input file not found"


def test_malformed_source_names_file_and_line(tmp_path: Path):
    (tmp_path / "bad.conll").write_text("Alice\tB-person\njust-one-column\n")
    result = run_stage(tmp_path, "tasks.ingest", ingest={"source": "bad.conll"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("ingest: error: bad.conll:2:")


def test_unknown_params_key_is_named(tmp_path: Path):
    result = run_stage(tmp_path, "tasks.clean", clean={"unicode_fom": "NFC"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "clean.unicode_fom" in result.stderr


@pytest.mark.slow  # the validate stage in a subprocess (Great Expectations): ~17 s each
@pytest.mark.parametrize("data", ["raw", "clean", "augmented"])
def test_contract_failure_names_the_checkpoint_and_record(tmp_path: Path, data: str):
    folder = tmp_path / {"raw": "data/raw", "clean": "data/clean", "augmented": "data/augmented"}[data]
    folder.mkdir(parents=True)
    good = '{"id": "f.conll:%d", "tokens": ["Alice", "visits", "Paris%d"], "tags": ["B-person", "O", "B-geo-loc"]}\n'
    for split in ("train", "dev", "test"):
        rows = [good % (i, i) for i in range(20)] if split == "train" else [good % (100, 100 + len(split))]
        (folder / f"{split}.jsonl").write_text("".join(rows))
    with (folder / "train.jsonl").open("a") as handle:
        handle.write('{"id": "f.conll:9", "tokens": ["Bob"], "tags": ["B-villain"]}\n')
    result = run_stage(tmp_path, "tasks.validate", "--data", data, validate={"reference_profile": None})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # Before the error, only the contract's progress lines (tasks/progress.py): no traceback, no other noise.
    before, error = result.stderr.split("validate: error: ", 1)
    assert error.startswith(f"data contract failed for {folder.relative_to(tmp_path)}")
    assert all(line.startswith("validate: contract tables ") for line in before.splitlines()), before
    assert "f.conll:9 token 0 'Bob': tag='B-villain'" in result.stderr


@pytest.mark.slow  # ~16 s, as above
def test_soft_failure_is_printed_as_a_warning_and_the_stage_succeeds(tmp_path: Path):
    folder = tmp_path / "data" / "raw"
    folder.mkdir(parents=True)
    row = '{"id": "f.conll:%d", "tokens": ["Alice", "in", "%s"], "tags": ["B-person", "O", "B-geo-loc"]}\n'
    (folder / "train.jsonl").write_text("".join(row % (i, "Paris") for i in range(20)))  # all duplicates
    (folder / "dev.jsonl").write_text(row % (100, "Rome"))
    (folder / "test.jsonl").write_text(row % (101, "Oslo"))
    result = run_stage(tmp_path, "tasks.validate",
                       validate={"reference_profile": None, "soft": {"raw": ["duplicate_share"]}})
    assert result.returncode == 0, result.stderr
    expected = ("warning (soft, validate.soft): - duplicate_share "
                "(expect_column_mean_to_be_between on sentences.is_duplicate)")
    assert expected in result.stdout
