"""`flowtune data add` then `dvc repro` re-imports: a source folder under data/external/ (paths.external, the
ingest stage's DVC dependency) gains a batch, DVC sees the dependency changed and reruns ingest, and the new
ingest report lists the new batch. The project's own dvc.yaml and stages in a scratch clone; no Prefect API
(the command says no event was sent and succeeds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env, scratch_clone, set_params

pytestmark = pytest.mark.integration


def run(repo: Path, *command: str) -> str:
    env = clean_env(PYTHONPATH=str(repo), PREFECT_API_URL="http://127.0.0.1:9/api")  # nothing answers there
    env["PATH"] = f"{repo / '.venv' / 'bin'}:{env['PATH']}"
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def conll(path: Path, words: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\tB-person\nruns\tO\n\n" for word in words))
    return path


def test_data_add_makes_dvc_repro_rerun_ingest(tmp_path: Path):
    repo = scratch_clone(tmp_path / "repo")
    conll(repo / "data" / "external" / "mine" / "first.conll", [f"old{i}" for i in range(40)])
    set_params(repo, ingest={"source": "data/external/mine"})
    run(repo, "dvc", "repro", "ingest")
    assert "up to date" in run(repo, "dvc", "status", "ingest")

    batch = conll(tmp_path / "2026-12.conll", [f"new{i}" for i in range(25)])
    added = run(repo, sys.executable, "-m", "flows.cli.main", "data", "add", str(batch))
    assert "no event sent" in added
    status = run(repo, "dvc", "status", "ingest")
    assert "changed deps" in status and "data/external" in status

    run(repo, "dvc", "repro", "ingest")
    report = json.loads((repo / "data" / "raw" / "ingest_report.json").read_text())
    assert [(b["file"], b["rows"]) for b in report["batches"]] == [("first.conll", 40), ("batches/2026-12.conll", 25)]
    assert report["sentences"] == 65
