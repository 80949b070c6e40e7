"""DVC experiments on the project's own dvc.yaml: two queued experiments with other learning rates, run by
`dvc queue start` (each in a copy under .dvc/tmp/exps/ without .venv), then compared with `dvc exp show`
and `dvc exp diff`. A tiny encoder, one epoch, no augmentation: the stages are the real ones."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import NO_VARIANTS, clean_env, scratch_clone, set_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATES = {"lr-high": "0.001", "lr-low": "0.0001"}


def venv_env(repo: Path) -> dict[str, str]:
    """A shell with the venv activated: `dvc queue start` spawns its worker as `dvc`, found on PATH."""
    env = clean_env()
    return env | {"PATH": f"{repo / '.venv' / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(repo / ".venv")}


def dvc(repo: Path, *args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, env=venv_env(repo), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def wait_for_queue(repo: Path, timeout_s: float = 900) -> str:
    """`dvc queue status` once nothing is queued or running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def test_two_queued_experiments_run_and_compare(tmp_path: Path, tiny_base: Path):
    repo = scratch_clone(tmp_path / "repo")
    set_params(repo, train={"base_model": str(tiny_base), "epochs": 1, "max_length": 32, "batch_size": 32,
                            "num_threads": 1, "log_every_steps": 0},
               augment={"methods": []}, evaluate={"latency_sentences": 5}, compress=NO_VARIANTS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["commit", "-qam", "tiny experiment settings"], cwd=repo, check=True)

    for name, rate in RATES.items():
        dvc(repo, "exp", "run", "--queue", "--name", name, "--set-param", f"train.learning_rate={rate}")
    dvc(repo, "queue", "start")
    try:
        status = wait_for_queue(repo)
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=venv_env(repo), capture_output=True,
                       timeout=120)
    assert status.count("Success") == 2, status + dvc(repo, "queue", "logs", "lr-high")

    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    experiments = {exp["name"]: exp for commit in shown for exp in (commit.get("experiments") or [])
                   for exp in [exp["revs"][0]] if exp.get("name") in RATES}
    assert set(experiments) == set(RATES), shown
    for name, exp in experiments.items():
        data = exp["data"]
        rate = data["params"]["params.yaml"]["data"]["train"]["learning_rate"]
        assert float(rate) == float(RATES[name])
        scores = data["metrics"]["data/metrics/eval.json"]["data"]
        assert scores["headline"] == "strict entity F1" and 0.0 <= scores["f1"] <= 1.0
    diff = dvc(repo, "exp", "diff", "lr-high", "lr-low")
    assert "train.learning_rate" in diff and "0.001" in diff and "0.0001" in diff
