"""The GPU suite (benchmarks/gpu_suite.sh) cannot rot before a GPU is lent: its CPU dry run runs every step
(train stage vs the Trainer in fp32 and bf16, a short full training, forward latency, serve) with a tiny
encoder, and the summary it writes holds every table with numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_cpu_dry_run_runs_every_step(tmp_path):
    result = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--cpu-dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, env=clean_env(OUT=str(tmp_path), PY=str(ROOT / ".venv/bin/python")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert {name: entry["status"] for name, entry in results.items()} == dict.fromkeys(
        ["env", "speed", "training", "latency", "serve"], "ok")
    speed = results["speed"]["result"]["rows"]
    assert {(row["mode"], row["precision"]) for row in speed} == {
        (mode, precision) for mode in ("flowtune", "hf-trainer") for precision in ("fp32", "bf16")}
    assert all(row["tokens_per_s"] > 0 and row["samples_per_s"] > 0 for row in speed)
    training = results["training"]["result"]
    assert all(0.0 <= row["test_f1"] <= 1.0 for row in training["rows"])
    assert {row["setting"] for row in results["latency"]["result"]["rows"]} == {"fp32", "bf16 autocast"}
    assert all(row["rps"] > 0 for row in results["serve"]["result"]["rows"])
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Training speed", "## Short training", "## Forward latency", "## Serve"):
        assert heading in summary
    assert "failed" not in summary
