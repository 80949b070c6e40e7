"""`dvc metrics diff` shows how data quality moved between two revisions of the data.

In a scratch clone: run the contract on the default data, commit `dvc.lock`, import the data
again with another split salt (a different train/dev/test partition), run the contract again; the
diff names the changed split sizes and entity shares, read from the contract reports.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import clean_env, scratch_clone, set_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def dvc(repo, *args: str) -> str:
    """`dvc <args>` as the docs run it: with the venv activated (its python runs the stages)."""
    path = f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run([".venv/bin/dvc", *args], cwd=repo, capture_output=True, text=True,
                            env=clean_env(PYTHONPATH=str(repo), PATH=path), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_metrics_diff_shows_data_quality_change(tmp_path_factory):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    dvc(repo, "repro", "validate")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "contract on the first split"], cwd=repo, check=True)
    set_params(repo, ingest={"split_salt": "another-salt"})
    dvc(repo, "repro", "validate")
    diff = json.loads(dvc(repo, "metrics", "diff", "--json", "HEAD"))["data/reports/contract_raw.json"]
    assert diff["sentences.train"]["old"] != diff["sentences.train"]["new"]
    for metric in ("sentences.train", "tokens.train", "entities.train", "sentences.dev"):
        assert diff[metric]["new"] - diff[metric]["old"] == diff[metric]["diff"] != 0, metric
