"""The champion's life through real flow runs: promoted, defended against a worse candidate, replaced
by a better one, restored by rollback.

A tiny random BERT learns a small synthetic NER set (names and places in fixed phrases) in seconds,
so F1 differences between configurations are large and certain. After the first run only the train
and evaluate stages run again (DVC has the rest), so each later run costs about a minute.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from flows.registry import Registry
from tasks.settings import Settings, s3_client
from tests.browser import capture_flow_run
from tests.helpers import (
    NO_VARIANTS,
    api_post,
    clean_env,
    run_flow,
    scratch_clone,
    set_params,
    synthetic_splits,
    tiny_encoder,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, local_services: Settings):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    synthetic_splits(repo / "data/external/synthetic")
    name = f"lifecycle-{uuid.uuid4().hex[:8]}"
    set_params(repo, ingest={"source": "data/external/synthetic"},
               task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": ["synonym"]},
               train={"base_model": str(tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))), "max_length": 32,
                      "batch_size": 8, "learning_rate": 5e-3, "epochs": 2},
               gate={"min_f1": 0.3, "min_behaviour": {"name_invariance": 0.0, "minimum_functionality": 0.0}},
               registry={"model_name": name}, compress=NO_VARIANTS)
    registry = Registry(s3_client(local_services), local_services.registry_bucket, local_services.registry_prefix)
    runs = {"first": run_flow(repo, local_services)}
    champion_after = {"first": registry.get_alias(name, "champion")}
    runs["again"] = run_flow(repo, local_services)  # nothing changed: every stage skipped, same weights
    champion_after["versions after again"] = registry.versions(name)
    again = re.search(r"/runs/flow-run/([0-9a-f-]{36})", runs["again"].stdout)
    champion_after["tasks of again"] = {t["name"] for t in api_post(
        local_services, "task_runs/filter",
        json={"flow_runs": {"id": {"any_": [again.group(1) if again else "none"]}}}).json()}
    # Worse: one epoch at a learning rate too small to learn. The floor is lowered so that only the
    # comparison with the champion can reject it.
    set_params(repo, train={"epochs": 1, "learning_rate": 1e-7}, gate={"min_f1": 0.0})
    runs["worse"] = run_flow(repo, local_services)
    champion_after["worse"] = registry.get_alias(name, "champion")
    champion_after["versions after worse"] = registry.versions(name)
    set_params(repo, train={"epochs": 6, "learning_rate": 5e-3})
    # It trains for a while: a second `flowtune run` in the same checkout meanwhile must wait for the
    # lock and give up naming the first.
    runs["better"], runs["concurrent"] = two_runs_in_one_checkout(repo)
    champion_after["better"] = registry.get_alias(name, "champion")
    return repo, name, runs, champion_after, registry


def two_runs_in_one_checkout(repo: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`flowtune run` twice at once in `repo` (services already wired by an earlier `run_flow`); the second
    starts once the first holds the checkout, and waits at most 5 s for it."""
    lock = repo / ".dvc" / "tmp" / "flowtune-run.lock"
    before = lock.read_text()
    sh = {"cwd": repo, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = subprocess.Popen([".venv/bin/flowtune", "run"], env=clean_env(PYTHONPATH=str(repo)), **sh)
    deadline = time.monotonic() + 120
    while lock.read_text() == before and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the holder writes its flow run id once it has the lock
    second = subprocess.run([".venv/bin/flowtune", "run"], timeout=600, capture_output=True,
                            env=clean_env(PYTHONPATH=str(repo), FLOWTUNE_RUN_LOCK_TIMEOUT_S="5"), cwd=repo, text=True)
    out, err = first.communicate(timeout=1200)
    return subprocess.CompletedProcess(first.args, first.returncode, out, err), second


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_first_run_is_promoted(lifecycle) -> None:
    _, _, runs, champion_after, _ = lifecycle
    assert runs["first"].returncode == 0, output(runs["first"])[-4000:]
    assert champion_after["first"] == 1


def test_a_run_where_nothing_changed_registers_nothing_and_says_unchanged(lifecycle) -> None:
    _, name, runs, champion_after, registry = lifecycle
    assert runs["again"].returncode == 0, output(runs["again"])[-4000:]
    assert "unchanged: champion is v1 (same weights)" in output(runs["again"])
    assert champion_after["versions after again"] == [1]
    assert "check-unchanged" in champion_after["tasks of again"]
    assert not {"gate", "publish-version", "move-champion"} & champion_after["tasks of again"]


def test_a_second_run_in_the_same_checkout_waits_then_names_the_holder(lifecycle, reliability) -> None:
    repo, _, runs, champion_after, _ = lifecycle
    assert runs["concurrent"].returncode == 1, output(runs["concurrent"])[-4000:]
    assert "is in use by another flowtune run (flow run" in output(runs["concurrent"])
    assert "waited 5 s" in output(runs["concurrent"])
    assert runs["better"].returncode == 0, output(runs["better"])[-4000:]
    status = subprocess.run([".venv/bin/dvc", "status"], cwd=repo, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout.lower()  # the checkout is consistent after all of this module's runs
    reliability(fault="two `flowtune run` at once in one checkout",
                happened="the second waited for the checkout lock (5 s here; FLOWTUNE_RUN_LOCK_TIMEOUT_S, 600 s by "
                         "default), then failed naming the holder's flow run and pid; the first completed",
                recovered=True, lost="nothing (one version; dvc status clean)")


def test_a_worse_candidate_is_rejected_and_the_champion_stays(lifecycle, local_services: Settings) -> None:
    _, _, runs, champion_after, _ = lifecycle
    assert runs["worse"].returncode == 1, output(runs["worse"])[-4000:]
    assert "gate rejected the candidate" in output(runs["worse"])
    assert "vs champion v1 on the same test set" in output(runs["worse"])
    assert champion_after["worse"] == 1 and champion_after["versions after worse"] == [1]  # nothing registered
    query = {"flows": {"name": {"any_": ["flowtune-pipeline"]}}, "sort": "START_TIME_DESC", "limit": 10}
    failed = [r for r in api_post(local_services, "flow_runs/filter", json=query).json()
              if r["state_type"] == "FAILED" and "vs champion v1" in (r["state"]["message"] or "")]
    assert len(failed) == 1 and "gate rejected the candidate" in failed[0]["state"]["message"]  # the worse run
    saved = json.loads((lifecycle[0] / ".flowtune/last_gate.json").read_text())  # the last (better) run's decision
    assert saved["promote"] is True and saved["champion"]["version"] == 1


def test_the_rejection_is_obvious_in_the_prefect_ui(lifecycle, local_services: Settings, tmp_path: Path) -> None:
    """The rejected run's page, in headless Chromium: state Failed, its gate task, the gate-decision card."""
    query = {"flows": {"name": {"any_": ["flowtune-pipeline"]}}, "flow_runs": {"state": {"type": {"any_": ["FAILED"]}}},
             "sort": "START_TIME_DESC"}
    failed = api_post(local_services, "flow_runs/filter", json=query).json()
    rejected = next(r for r in failed if "vs champion v1" in (r["state"]["message"] or ""))  # this module's run
    seen = capture_flow_run(local_services.ui_url, rejected["id"], tmp_path / "ui", ["train", "evaluate", "gate"],
                            "gate-decision", "Evaluation gate",
                            auth_string=local_services.prefect_api_auth_string.get_secret_value())
    assert "Failed" in seen["text"]["task-runs"], f"state not shown; screenshots: {seen['screenshots']}"
    assert "publish-version" not in seen["tasks_shown"]


def test_a_better_candidate_is_promoted_and_rollback_restores_the_old_champion(lifecycle) -> None:
    repo, name, runs, champion_after, registry = lifecycle
    assert runs["better"].returncode == 0, output(runs["better"])[-4000:]
    assert champion_after["better"] == 2
    first, better = (registry.manifest(name, v)["metadata"]["metrics"]["f1"] for v in (1, 2))
    assert better >= first
    rollback = subprocess.run([".venv/bin/flowtune", "registry", "rollback", name], cwd=repo,
                              env=clean_env(PYTHONPATH=str(repo)), capture_output=True, text=True, timeout=120)
    assert rollback.returncode == 0, rollback.stderr
    assert registry.get_alias(name, "champion") == 1
