"""prefect.yaml against the code: every deployment names a real flow, passes only parameters that
flow accepts, targets the pool our worker serves, and schedules in a real time zone."""

from __future__ import annotations

import importlib
import inspect
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows.names import TRAIN_POOL, WORK_POOL
from tests.helpers import ROOT

DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def flow_of(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


PIPELINES = [d for d in DEPLOYMENTS if d["name"] not in {"gpu", "gc", "sweep-trial", "monitor"}]


def test_the_deployments_are_there():
    assert {d["name"] for d in DEPLOYMENTS} == {"nightly", "data-refresh", "champion-eval", "gpu", "gc", "sweep-trial",
                                              "monitor"}


@pytest.mark.parametrize("deployment", PIPELINES, ids=lambda d: d["name"])
def test_deployment_matches_its_flow(deployment: dict):
    flow = flow_of(deployment["entrypoint"])
    accepted = inspect.signature(flow.fn).parameters
    assert set(deployment["parameters"]) <= set(accepted), "a parameter the flow does not take"
    assert deployment["parameters"]["workspace"] == "isolated"  # scheduled runs never touch the user's tree
    assert deployment["work_pool"]["name"] == WORK_POOL
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    for schedule in deployment.get("schedules", []):
        ZoneInfo(schedule["timezone"])  # raises for an unknown zone
        assert len(schedule["cron"].split()) == 5


def test_the_train_stage_deployment_targets_the_gpu_pool_and_the_pipeline_can_use_it():
    (train,) = [d for d in DEPLOYMENTS if d["name"] == "gpu"]
    assert train["work_pool"]["name"] == TRAIN_POOL and "schedules" not in train
    flow = flow_of(train["entrypoint"])
    assert flow.name == "flowtune-train-stage"
    assert {"revision", "params_yaml", "dvc_lock"} == set(inspect.signature(flow.fn).parameters)
    assert "train_on" in inspect.signature(flow_of("flows/orchestration/pipeline.py:training_pipeline").fn).parameters


def test_gc_runs_weekly_in_this_checkout_one_run_at_a_time():
    """Storage stays bounded unattended: the retention rules run every Sunday at 04:00 Berlin time, after
    the nightly run, in the worker's checkout (it reads that checkout's dvc.lock and DVC cache)."""
    (gc,) = [d for d in DEPLOYMENTS if d["name"] == "gc"]
    flow = flow_of(gc["entrypoint"])
    assert flow.name == "flowtune-gc"
    assert set(gc["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    assert "workspace" not in gc["parameters"]
    assert gc["work_pool"]["name"] == WORK_POOL
    assert gc["concurrency_limit"]["limit"] == 1
    (schedule,) = gc["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 4 * * 0", "Europe/Berlin")


def test_no_hyperparameter_is_a_deployment_parameter():
    """Flow parameters choose the params file, data source and commit; knobs stay in params.yaml."""
    knobs = set(yaml.safe_load((ROOT / "params.yaml").read_text())) - {"paths"}
    for deployment in DEPLOYMENTS:
        assert not knobs & set(deployment.get("parameters", {})), deployment["name"]


def test_sweep_trials_are_a_deployment_on_the_local_pool_that_the_sweep_starts():
    from flows.names import SWEEP_TRIAL_DEPLOYMENT

    (trial,) = [d for d in DEPLOYMENTS if d["name"] == "sweep-trial"]
    flow = flow_of(trial["entrypoint"])
    assert f"{flow.name}/{trial['name']}" == SWEEP_TRIAL_DEPLOYMENT
    assert trial["work_pool"]["name"] == WORK_POOL and "schedules" not in trial
    expected = {"study", "trial_id", "trial_number", "overrides", "revision", "dvc_lock", "params_file", "data_source"}
    assert set(inspect.signature(flow.fn).parameters) == expected


def test_the_monitor_runs_daily_and_drift_or_new_data_start_the_nightly_training_once_per_cool_down():
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.names import MONITOR_FLOW
    from flows.ops.monitor import DATA_CHANGED_EVENT, DRIFT_EVENT
    from tasks.params import load_params

    (monitor,) = [d for d in DEPLOYMENTS if d["name"] == "monitor"]
    flow = flow_of(monitor["entrypoint"])
    assert flow.name == MONITOR_FLOW
    assert set(monitor["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    (schedule,) = monitor["schedules"]
    assert len(schedule["cron"].split()) == 5 and schedule["cron"].split()[2:] == ["*", "*", "*"]  # daily
    (nightly,) = [d for d in DEPLOYMENTS if d["name"] == "nightly"]
    drift, data = [DeploymentEventTrigger.model_validate(t) for t in nightly["triggers"]]
    # One trigger per event: a batch labelled after a drift alarm must not wait out the drift's cool-down.
    assert drift.expect == {DRIFT_EVENT} and data.expect == {DATA_CHANGED_EVENT}
    model = load_params(ROOT / "params.yaml").registry.model_name
    for trigger in (drift, data):
        assert trigger.match.model_dump() == {"prefect.resource.id": f"flowtune.model.{model}"}  # what it trains
        assert trigger.posture == "Reactive" and trigger.threshold == 1
    assert drift.within.total_seconds() >= 3600 and 0 < data.within.total_seconds() <= drift.within.total_seconds()


def test_deploy_warns_when_a_trigger_names_another_model_than_params_yaml(tmp_path):
    from flows.cli.main import trigger_mismatches

    assert trigger_mismatches(str(ROOT / "prefect.yaml"), str(ROOT / "params.yaml")) == []
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"]["model_name"] = "renamed"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    problems = trigger_mismatches(str(ROOT / "prefect.yaml"), str(tmp_path / "params.yaml"))
    assert len(problems) == 2  # the drift trigger and the new-data trigger
    for problem in problems:
        assert "matches flowtune.model.wnut16-ner" in problem and "trains flowtune.model.renamed" in problem
