"""infra/local/python, the interpreter every DVC stage runs with: which Python it picks, and when."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import ROOT


def fake_python(path: Path, name: str) -> Path:
    """An executable that says which interpreter it is and what it was asked to run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{name} $*"\n')
    path.chmod(0o755)
    return path


def checkout(root: Path) -> Path:
    """A folder with the project's infra/local/python, as a clone (or a queued experiment's copy) has."""
    script = root / "infra" / "local" / "python"
    script.parent.mkdir(parents=True)
    shutil.copy2(ROOT / "infra" / "local" / "python", script)
    return script


def run(script: Path, tmp_path: Path, **env: str) -> str:
    path_dir = tmp_path / "path-bin"
    fake_python(path_dir / "python", "python-on-path")
    environment = {"PATH": f"{path_dir}:/usr/bin:/bin", **env}
    return subprocess.run([str(script), "-m", "tasks.train"], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_checkouts_venv_comes_before_python_on_path(tmp_path: Path):
    script = checkout(tmp_path / "repo")
    fake_python(tmp_path / "repo" / ".venv" / "bin" / "python", "repo-venv")
    assert run(script, tmp_path) == "repo-venv -m tasks.train"


def test_flowtune_python_wins(tmp_path: Path):
    script = checkout(tmp_path / "repo")
    fake_python(tmp_path / "repo" / ".venv" / "bin" / "python", "repo-venv")
    chosen = fake_python(tmp_path / "flow" / "python", "flow-python")
    assert run(script, tmp_path, FLOWTUNE_PYTHON=str(chosen)) == "flow-python -m tasks.train"


def test_a_queued_experiment_uses_its_repositorys_venv(tmp_path: Path):
    """`dvc exp run --queue` runs each experiment in <repo>/.dvc/tmp/exps/<name>/, a copy without .venv."""
    fake_python(tmp_path / "repo" / ".venv" / "bin" / "python", "repo-venv")
    script = checkout(tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmp8f2k")
    assert run(script, tmp_path) == "repo-venv -m tasks.train"


def test_without_any_venv_python_on_path_runs_it(tmp_path: Path):
    script = checkout(tmp_path / "elsewhere")
    assert run(script, tmp_path) == "python-on-path -m tasks.train"
    assert os.access(ROOT / "infra" / "local" / "python", os.X_OK)
