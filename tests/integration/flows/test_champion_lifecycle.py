"""The champion's life through real flow runs: a candidate below the gate's floor (nothing registered), the
first one that learned promoted, a worse candidate rejected, a better one promoted, the old one restored by
rollback.

A tiny random BERT learns a small synthetic NER set (names and places in fixed phrases) in seconds,
so F1 differences between configurations are large and certain. Every stage runs once, in the first run;
later runs train and evaluate again only when the training params change (DVC has the rest, and its run
cache has the models of params tried before), so each costs about a minute.
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
    # Unable to learn (one epoch at a learning rate far too small): every stage runs, the candidate is below
    # the floor gate.min_f1 0.3, nothing is registered.
    unable_to_learn, able = {"epochs": 1, "learning_rate": 1e-7}, {"epochs": 2, "learning_rate": 5e-3}
    set_params(repo, train=unable_to_learn)
    runs = {"floor": run_flow(repo, local_services)}
    champion_after = {"floor": (registry.versions(name), registry.get_alias(name, "champion")),
                      "metrics after floor": json.loads((repo / "data/metrics/eval.json").read_text()),
                      "dvc status after floor": dvc_status(repo), "floor run": flow_run_id(runs["floor"])}
    set_params(repo, train=able)  # only train and later stages run again
    runs["first"] = run_flow(repo, local_services)
    champion_after["first"] = registry.get_alias(name, "champion")
    runs["again"] = run_flow(repo, local_services)  # nothing changed: every stage skipped, same weights
    champion_after["versions after again"] = registry.versions(name)
    champion_after["tasks of again"] = {t["name"] for t in api_post(
        local_services, "task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id(runs["again"])]}}}).json()}
    # Worse: the floor run's training params again (DVC's run cache restores its model: no training). The floor
    # is lowered so that only the comparison with the champion can reject it.
    set_params(repo, train=unable_to_learn, gate={"min_f1": 0.0})
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


def flow_run_id(result: subprocess.CompletedProcess) -> str:
    """The flow run's id, from the link `flowtune run` prints ("none" if it printed none)."""
    found = re.search(r"/runs/flow-run/([0-9a-f-]{36})", result.stdout)
    return found.group(1) if found else "none"


def dvc_status(repo: Path) -> str:
    return subprocess.run([".venv/bin/dvc", "status"], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_a_candidate_below_the_floor_fails_the_run_and_says_why(lifecycle) -> None:
    _, _, runs, _, _ = lifecycle
    assert runs["floor"].returncode == 1, output(runs["floor"])[-4000:]
    assert "gate rejected the candidate" in output(runs["floor"])
    assert "< floor gate.min_f1 0.3000" in output(runs["floor"])


def test_a_rejected_candidate_registers_nothing(lifecycle) -> None:
    _, _, _, champion_after, _ = lifecycle
    assert champion_after["floor"] == ([], None)


def test_every_stage_ran_before_the_rejection_and_the_metrics_are_real(lifecycle) -> None:
    _, _, _, champion_after, _ = lifecycle
    assert 0.0 <= champion_after["metrics after floor"]["f1"] < 0.3
    assert "up to date" in champion_after["dvc status after floor"].lower()


def test_prefect_records_the_rejected_run_with_the_gate_decision(lifecycle, local_services: Settings) -> None:
    _, _, _, champion_after, _ = lifecycle
    query = {"flow_runs": {"id": {"any_": [champion_after["floor run"]]}}}
    (run,) = api_post(local_services, "flow_runs/filter", json=query).json()
    assert run["state_type"] == "FAILED" and "floor gate.min_f1 0.3000" in run["state"]["message"]
    artifacts = api_post(local_services, "artifacts/filter",
                         json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    gate = [a for a in artifacts if a["key"] == "gate-decision"]
    assert gate and "reject" in gate[0]["data"].lower()
    assert "registered-model" not in {a["key"] for a in artifacts}


def test_a_candidate_that_learned_is_promoted(lifecycle) -> None:
    _, _, runs, champion_after, _ = lifecycle
    assert runs["first"].returncode == 0, output(runs["first"])[-4000:]
    assert champion_after["first"] == 1
    assert "up to date until train" in output(runs["first"])  # the data stages did not run again


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
    assert "up to date" in dvc_status(repo).lower()  # the checkout is consistent after all of this module's runs
    reliability(fault="two `flowtune run` at once in one checkout",
                happened="the second waited for the checkout lock (5 s here; FLOWTUNE_RUN_LOCK_TIMEOUT_S, 600 s by "
                         "default), then failed naming the holder's flow run and pid; the first completed",
                recovered=True, lost="nothing (one version; dvc status clean)")


def test_a_worse_candidate_is_rejected_and_the_champion_stays(lifecycle, local_services: Settings) -> None:
    _, _, runs, champion_after, _ = lifecycle
    assert runs["worse"].returncode == 1, output(runs["worse"])[-4000:]
    assert "gate rejected the candidate" in output(runs["worse"])
    assert "vs champion v1 on the same test set" in output(runs["worse"])
    assert "Stage 'train' is cached - skipping run" in output(runs["worse"])  # params tried before: not retrained
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
