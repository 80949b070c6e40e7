"""The train stage on another work pool (a GPU pool in production), the DVC remote carrying its data.

The main flow pushes what it has built, then starts a run of a `flowtune-train-stage` deployment
(executed by that pool's worker, on another machine or in a Kubernetes job) with the commit, its
params.yaml and its dvc.lock, and waits. That run checks the commit out in a workspace of its own,
pulls the stage's inputs, trains (holding a `gpu` slot), pushes the model and leaves its updated
dvc.lock in the DVC bucket. The main flow then takes that lock and pulls the model, exactly as if
the stage had run in place: `dvc status` is clean and evaluate continues.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows import reports
from flows.steps import StageError, check_storage_task, dvc_pull, dvc_push, run_logged, run_settings, run_stage
from flows.workspace import DEFAULT_PARAMS, run_workspace
from tasks.params import Params, load_params
from tasks.settings import Settings, s3_client

LOCK = "dvc.lock"


def lock_key(run_id: str) -> str:
    """Where a train-stage run leaves its dvc.lock, in the DVC bucket beside the data it describes."""
    return f"flowtune-runs/{run_id}/{LOCK}"


@flow(name="flowtune-train-stage", log_prints=True)
def train_stage(revision: str, params_yaml: str, dvc_lock: str) -> str:
    """Train the commit `revision` with these params and upstream data (named by `dvc_lock`), push the model.

    Returns the key of the updated dvc.lock in the DVC bucket.
    """
    settings = run_settings()
    run_id = str(flow_run.get_id() or "local")
    with run_workspace("isolated", run_id, settings, revision=revision):
        Path(DEFAULT_PARAMS).write_text(params_yaml)
        Path(LOCK).write_text(dvc_lock)
        params = load_params(DEFAULT_PARAMS)
        check_storage_task(settings)
        dvc_pull()
        run_stage("train", params, settings)
        dvc_push()
        s3_client(settings).put_object(Bucket=settings.dvc_bucket, Key=lock_key(run_id), Body=Path(LOCK).read_bytes())
    return lock_key(run_id)


def committed_revision() -> str:
    """HEAD of the checkout the flow works in; a warning when its code has uncommitted changes (the
    other machine checks out the commit, so such changes do not travel)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tasks", "flows"],
                             capture_output=True, text=True).stdout.strip()
    if changed:
        get_run_logger().warning("uncommitted code changes are not sent to the train pool; it trains commit %s:\n%s",
                                 head, changed)
    return head


@task(name="train", task_run_name="train (on {deployment})", cache_policy=NO_CACHE)
def train_elsewhere(deployment: str, params: Params, settings: Settings) -> dict:
    """Run the train stage through `deployment` and bring its result back into this checkout."""
    from prefect.deployments import run_deployment

    parameters = {"revision": committed_revision(), "params_yaml": Path(DEFAULT_PARAMS).read_text(),
                  "dvc_lock": Path(LOCK).read_text()}
    remote = run_deployment(deployment, parameters=parameters, timeout=None)
    if not remote.state or not remote.state.is_completed():
        state = remote.state.name if remote.state else "unknown"
        message = remote.state.message if remote.state else ""
        raise StageError(f"train stage on {deployment!r}: run {remote.name} ended {state}: {message}")
    body = s3_client(settings).get_object(Bucket=settings.dvc_bucket, Key=lock_key(str(remote.id)))["Body"].read()
    Path(LOCK).write_bytes(body)
    run_logged(["dvc", "pull", "train"], "dvc pull train")
    return reports.publish("train", params, settings, str(flow_run.get_id() or "local"))
