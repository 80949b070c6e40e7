"""The train stage's command line as dvc repro runs it: SIGKILL mid-epoch then resume, and DDP with torchrun.

Both use a tiny random BERT on one thread per process, so results are deterministic: the resumed run
and the 2-process run are compared with the uninterrupted single-process run of the same global batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks import checkpoints
from tasks.io import write_jsonl
from tests.helpers import ROOT, clean_env, synthetic

pytestmark = pytest.mark.slow  # real training subprocesses (torchrun, a SIGKILL and a resume): ~40 s each

STAGE = [sys.executable, "-m", "tasks.train", "--params", "params.yaml"]


def workdir(root: Path, base: Path, **train) -> Path:
    """A folder holding params.yaml (the repo's, with a tiny training setup) and the augmented data."""
    root.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"]["labels"] = ["person", "geo-loc"]
    tiny = dict(base_model=str(base), max_length=16, epochs=3, batch_size=4, learning_rate=5e-3, dropout=0.0,
                num_threads=1, checkpoint_every_steps=5, log_every_steps=1)
    params["train"].update({**tiny, **train})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = root / params["paths"]["augmented"]
    write_jsonl(data / "train.jsonl", synthetic(48, 1))
    write_jsonl(data / "dev.jsonl", synthetic(16, 2))
    return root


def stage_env() -> dict[str, str]:
    return clean_env(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def run_stage(folder: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(STAGE, cwd=folder, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def outputs(folder: Path) -> tuple[dict, list[str], dict[str, torch.Tensor]]:
    metrics = json.loads((folder / "data/metrics/train.json").read_text())
    curve = (folder / "data/metrics/train_curve.csv").read_text().splitlines()
    return metrics, curve, load_file(folder / "data/models/candidate/model.safetensors")


def curve_losses(curve: list[str]) -> list[float]:
    return [float(row.split(",")[1]) for row in curve[1:]]


def kill_at(folder: Path, marker: str) -> None:
    """Start the stage and SIGKILL it as soon as it prints `marker`."""
    process = subprocess.Popen(STAGE, cwd=folder, env=stage_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)


def test_sigkill_mid_epoch_then_rerun_resumes_and_matches_an_uninterrupted_run(tiny_base, tmp_path) -> None:
    reference = workdir(tmp_path / "reference", tiny_base)
    run_stage(reference)
    killed = workdir(tmp_path / "killed", tiny_base)

    kill_at(killed, "train: epoch 2/3 step 7/12")

    state = killed / "data/models/checkpoints" / checkpoints.CHECKPOINT_FILE
    progress = torch.load(state, weights_only=True)["progress"]
    assert 12 < progress["global_step"] < 36  # a checkpoint from inside the run, not its end
    assert not (killed / "data/models/candidate").exists()
    rerun = run_stage(killed)
    assert f"resuming from data/models/checkpoints at epoch {progress['epoch']}" in rerun.stdout
    want_metrics, want_curve, want_weights = outputs(reference)
    got_metrics, got_curve, got_weights = outputs(killed)
    assert got_metrics["dev_f1"] == pytest.approx(want_metrics["dev_f1"], abs=0.005)
    assert want_metrics["dev_f1"] > 0.5  # the comparison is between runs that learned something
    assert curve_losses(got_curve) == pytest.approx(curve_losses(want_curve), rel=1e-5)
    assert all(torch.allclose(got_weights[k], want_weights[k], atol=1e-6) for k in want_weights)
    assert list((killed / "data/models/checkpoints").iterdir()) == []


def test_two_processes_with_torchrun_match_one_process_with_the_same_global_batch(tiny_base, tmp_path) -> None:
    single = workdir(tmp_path / "single", tiny_base, batch_size=8)
    run_stage(single)
    double = workdir(tmp_path / "ddp", tiny_base, batch_size=4, processes=2)

    result = run_stage(double)  # train.processes: 2 makes the stage relaunch itself under torchrun

    assert "done (rank > 0)" in result.stdout
    want_metrics, want_curve, want_weights = outputs(single)
    got_metrics, got_curve, got_weights = outputs(double)
    assert got_metrics["processes"] == 2 and want_metrics["processes"] == 1
    assert got_metrics["optimizer_steps"] == want_metrics["optimizer_steps"] == 3 * 6
    assert curve_losses(got_curve) == pytest.approx(curve_losses(want_curve), rel=1e-4)
    assert got_metrics["dev_f1"] == pytest.approx(want_metrics["dev_f1"], abs=0.005)
    assert all(torch.allclose(got_weights[k], want_weights[k], atol=1e-4) for k in want_weights)
