"""`flowtune sweep` as a user runs it: services up, deployments created, then a 4-trial search, 2 at a time, on
the work pool's worker, then `flowtune sweep apply`.

A tiny random BERT on synthetic data keeps each trial to seconds of training. The space is one learning rate
that learns (1e-2: dev F1 1.0 after one epoch) and one that cannot (1e-7: F1 stays at the random head's ~0.3),
plus a dropout range so that parameter importance has something to rank. The seeded sampler draws the
learning rates good, good, good, bad (checked below), and the bad trial starts only once an earlier one has
completed, so the median pruner (one startup trial, no warm-up) always stops it after its first epoch.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import (
    NO_VARIANTS,
    clean_env,
    port_settings,
    scratch_clone,
    set_params,
    synthetic_splits,
    tiny_encoder,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD, BAD = 1.0e-2, 1.0e-7
SEED = 4  # TPE's first (random) draws for this space: GOOD, GOOD, GOOD, BAD
SWEEP = {"study": "tiny-sweep", "n_trials": 4, "parallel": 2, "direction": "maximize", "sampler": "tpe", "seed": SEED,
         "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, "storage": None,
         "space": {"train.learning_rate": {"choices": [GOOD, BAD]},
                   "train.dropout": {"low": 0.0, "high": 0.2, "log": False}}}


def sh(repo: Path, env: dict, *command: str, timeout: float = 900) -> str:
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_the_seed_draws_three_good_rates_then_a_bad_one():
    """The premise of the pruning assertion below: the draws depend on the seed and the order of asking only."""
    import optuna

    from flows.orchestration.sweep import suggest
    from tasks.params import SweepParams

    sweep = SweepParams(**SWEEP)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
    assert [suggest(study.ask(), sweep)["train.learning_rate"] for _ in range(4)] == [GOOD, GOOD, GOOD, BAD]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    data = synthetic_splits(tmp_path_factory.mktemp("incoming") / "synthetic")
    set_params(repo, task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": []}, evaluate={"latency_sentences": 5},
               train={"base_model": str(tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))), "max_length": 32,
                      "batch_size": 8, "epochs": 2, "num_threads": 1, "log_every_steps": 0},
               sweep=SWEEP, registry={"model_name": f"swept-{uuid.uuid4().hex[:8]}"}, compress=NO_VARIANTS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["commit", "-qam", "tiny sweep"], cwd=repo, check=True)
    ports = port_settings()
    (repo / ".env").write_text("".join(f"{k}={v}\n" for k, v in ports.items()))
    env = clean_env(PYTHONPATH=str(repo))  # the clone's code, not the editable install's
    try:
        sh(repo, env, ".venv/bin/flowtune", "services", "up")
        sh(repo, env, ".venv/bin/flowtune", "deploy")
        started = time.monotonic()
        output = sh(repo, env, ".venv/bin/flowtune", "sweep", "--data-source", str(data))
        yield repo, env, output, time.monotonic() - started
    finally:
        subprocess.run([".venv/bin/flowtune", "services", "down"], cwd=repo, env=env, capture_output=True)


def api(repo: Path, method: str, path: str, body: dict | None = None):
    from flows.ops.services import prefect_auth_header, service_env
    from tasks.settings import Settings

    settings = Settings(_env_file=repo / ".env", state_dir=repo / ".flowtune")
    url = service_env(settings)["PREFECT_API_URL"]
    response = httpx.request(method, f"{url}/{path}", json=body, headers=prefect_auth_header(settings), timeout=30)
    response.raise_for_status()
    return response.json()


def study_of(repo: Path):
    import optuna

    from tasks.sweeping import open_storage

    return optuna.load_study(study_name=SWEEP["study"],
                             storage=open_storage(str(repo / ".flowtune/sweeps/optuna-journal.log")))


def test_four_trials_ran_on_the_work_pool_two_at_a_time(swept):
    repo, _, output, seconds = swept
    assert "=== flowtune sweep finished: COMPLETED" in output, output
    runs = api(repo, "POST", "flow_runs/filter", {"flows": {"name": {"any_": ["flowtune-sweep-trial"]}}})
    assert len(runs) == 4 and {run["work_pool_name"] for run in runs} == {"flowtune-local"}
    assert {run["state_type"] for run in runs} == {"COMPLETED"}, [run["state"] for run in runs]
    spans = [(datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"])) for r in runs]
    at_once = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert at_once == 2, spans  # never more than sweep.parallel, and the worker ran two side by side
    print(f"sweep of 4 trials: {seconds:.0f} s")


def test_the_bad_trial_is_pruned_and_the_good_ones_complete(swept):
    repo = swept[0]
    trials = study_of(repo).trials
    states = {t.number: t.state.name for t in trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "PRUNED"}, states
    pruned = trials[3]
    assert pruned.params["train.learning_rate"] == BAD and list(pruned.intermediate_values) == [1]
    assert all(t.value == pytest.approx(1.0) for t in trials[:3])  # the tiny model learns the synthetic set


def test_results_table_plots_and_one_test_score_are_published(swept):
    repo, _, output, _ = swept
    sweeps = api(repo, "POST", "flow_runs/filter", {"flows": {"name": {"any_": ["flowtune-sweep"]}}})
    artifacts = api(repo, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [sweeps[0]["id"]]}}})
    by_key = {artifact["key"]: artifact for artifact in artifacts}
    table = by_key["sweep-trials"]["data"]
    rows = yaml.safe_load(table) if isinstance(table, str) else table
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert "scored once" in by_key["sweep-best"]["data"] and "evaluation" in by_key  # test, for the best trial only
    for name in ("optimization-history", "param-importances"):
        url = re.search(r"\((http://\S+\.html)\)", by_key[f"sweep-{name}"]["data"])[1]  # a markdown link
        page = httpx.get(url, timeout=30)  # the reports bucket, no credentials
        assert page.status_code == 200 and "plotly" in page.text
    assert "Best trial:" in output and "test strict entity F1" in output


def test_sweep_apply_writes_the_best_values_into_params_yaml(swept):
    repo, env, _, _ = swept
    best = study_of(repo).best_trial
    output = sh(repo, env, ".venv/bin/flowtune", "sweep", "apply")
    assert "+  learning_rate: 0.01" in output and f"best trial #{best.number}" in output
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == GOOD and params["train"]["dropout"] == best.params["train.dropout"]
    changed = sh(repo, env, "git", "diff", "--numstat").split()
    assert changed[:2] == ["2", "2"], changed  # exactly the two swept lines
