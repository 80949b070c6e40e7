"""The train stage on another work pool (a GPU pool in production), the DVC remote carrying its data.

The main flow pushes what it has built, then starts a run of a `flowtune-train-stage` deployment
(executed by that pool's worker, on another machine or in a Kubernetes job) with the commit, its
params.yaml and its dvc.lock, and waits. That run checks the commit out in a workspace of its own,
pulls the stage's inputs, trains (holding a `gpu` slot), pushes the model and leaves its updated
dvc.lock in the DVC bucket. The main flow then takes that lock and pulls the model, exactly as if
the stage had run in place: `dvc status` is clean and evaluate continues.
"""

from __future__ import annotations

import datetime
import logging
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.names import TRAIN_STAGE_FLOW
from flows.orchestration import reports
from flows.orchestration.steps import (
    StageError,
    check_storage_task,
    dvc_pull,
    dvc_push,
    repro_stage,
    run_logged,
    run_settings,
)
from flows.orchestration.workspace import DEFAULT_PARAMS, run_workspace
from tasks.params import Params, load_params
from tasks.settings import Settings, s3_client

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun, State, Worker

LOCK = "dvc.lock"
# How long the main flow waits for the remote train run before cancelling it. Generous: a real
# fine-tune on one GPU takes minutes to a few hours; a run not done after 6 h is stuck (its worker or
# pod died, or it never left the queue), and the nightly run must not wait on it forever.
DEFAULT_TRAIN_TIMEOUT_S = 6 * 3600.0
POLL_S = 10.0  # how often the remote run's state is read while waiting
# A worker counts as polling while its last heartbeat is younger than this many of its heartbeat
# intervals: the server's foreman marks it OFFLINE after 3 missed ones, but only every 15 s, and not
# at all when that service is off, so the heartbeat's age is checked here too.
HEARTBEAT_MISSES = 3
DEFAULT_HEARTBEAT_S = 30  # `prefect worker start`'s default interval (PREFECT_WORKER_HEARTBEAT_SECONDS)


def lock_key(run_id: str) -> str:
    """Where a train-stage run leaves its dvc.lock, in the DVC bucket beside the data it describes."""
    return f"flowtune-runs/{run_id}/{LOCK}"


@flow(name=TRAIN_STAGE_FLOW, log_prints=True)
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
        repro_stage("train", params, settings)
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
def train_elsewhere(deployment: str, params: Params, settings: Settings,
                    timeout_s: float = DEFAULT_TRAIN_TIMEOUT_S) -> dict:
    """Run the train stage through `deployment` and bring its result back into this checkout.

    Fails at once when no worker polls the deployment's work pool, and cancels the remote run when
    it has not finished after `timeout_s` seconds (StageError either way), so a run never hangs.
    """
    parameters = {"revision": committed_revision(), "params_yaml": Path(DEFAULT_PARAMS).read_text(),
                  "dvc_lock": Path(LOCK).read_text()}
    remote = run_remote(deployment, parameters, timeout_s)
    if not remote.state or not remote.state.is_completed():
        state = remote.state.name if remote.state else "unknown"
        message = remote.state.message if remote.state else ""
        raise StageError(f"train stage on {deployment!r}: run {remote.name} ended {state}: {message}")
    body = s3_client(settings).get_object(Bucket=settings.dvc_bucket, Key=lock_key(str(remote.id)))["Body"].read()
    Path(LOCK).write_bytes(body)
    run_logged(["dvc", "pull", "train"], "dvc pull train")
    return reports.publish("train", params, settings, str(flow_run.get_id() or "local"))


def run_remote(deployment: str, parameters: dict, timeout_s: float, poll_s: float = POLL_S) -> FlowRun:
    """Start a run of `deployment` once a worker is there to take it, and wait for its end; the run.

    Raises StageError when no worker polls the pool, or when the run has not ended after `timeout_s`
    (it is then cancelled). Leaving by any other exception (this flow cancelled, ctrl-C) cancels it too:
    nothing should train for a flow that is gone.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        require_polling_worker(client, deployment)
        # timeout=0: create the run and return; the wait below is ours, so that it can end.
        remote = run_deployment(deployment, parameters=parameters, timeout=0)
        log().info("started run %s (%s) of %s; waiting up to %g s", remote.name, remote.id, deployment, timeout_s)
        try:
            finished = wait_for_end(client, remote, timeout_s, poll_s)
        except BaseException:
            cancel(client, remote)
            raise
        if finished is None:
            last = cancel(client, remote)
            raise StageError(timeout_message(deployment, remote, timeout_s, last))
        return finished


def require_polling_worker(client: SyncPrefectClient, deployment: str, what: str = "train stage") -> None:
    """StageError naming the pool and how to start a worker, unless a worker polls `deployment`'s pool
    (`what` names the runs in the message: the train stage, a sweep's trials).

    A deployment without a work pool (served by `flow.serve()`) and push or managed pools (no
    workers) are not checked: the timeout still bounds the wait for them.
    """
    from prefect.client.schemas.objects import WorkPoolStatus
    from prefect.exceptions import ObjectNotFound

    try:
        pool_name = client.read_deployment_by_name(deployment).work_pool_name
    except ObjectNotFound:
        hint = ("`flowtune deploy` creates it." if what != "train stage" else "`train_on` takes '<flow>/<deployment>' "
                f"as `prefect deployment ls` lists it (e.g. {TRAIN_STAGE_FLOW}/gpu, created by `flowtune deploy`).")
        raise StageError(f"{what}: no deployment {deployment!r} on this Prefect server; {hint}") from None
    if not pool_name:
        return
    pool = client.read_work_pool(pool_name)
    if pool.is_push_pool or pool.is_managed_pool:
        return
    if pool.status == WorkPoolStatus.PAUSED:
        raise StageError(f"{what} on {deployment!r}: its work pool {pool_name!r} is paused, so the run would "
                         f"never start. Resume it: `prefect work-pool resume {pool_name}`.")
    workers = client.read_workers_for_work_pool(pool_name)
    if not polling_workers(workers, now()):
        raise StageError(no_worker_message(deployment, pool_name, workers, what))


def polling_workers(workers: list[Worker], at: datetime.datetime) -> list[str]:
    """Names of the workers that are ONLINE and sent a heartbeat within HEARTBEAT_MISSES intervals of `at`."""
    from prefect.client.schemas.objects import WorkerStatus

    alive = []
    for worker in workers:
        interval = worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_S
        beat = worker.last_heartbeat_time
        if worker.status == WorkerStatus.ONLINE and beat and (at - beat).total_seconds() <= HEARTBEAT_MISSES * interval:
            alive.append(worker.name)
    return alive


def no_worker_message(deployment: str, pool: str, workers: list[Worker], what: str = "train stage") -> str:
    """What failed and how to fix it: start a worker for `pool`."""
    seen = ", ".join(f"{w.name} (last heartbeat {w.last_heartbeat_time:%Y-%m-%d %H:%M:%S} UTC)"
                     for w in workers if w.last_heartbeat_time)
    return (f"{what} on {deployment!r}: no worker is polling its work pool {pool!r}, so the run would wait "
            f"forever. Start one on the training machine, in a checkout of this repository wired to this Prefect "
            f"server (`flowtune services up` there, or PREFECT_API_URL set): `prefect worker start --pool {pool}`; "
            f"on Kubernetes, deploy the worker of infra/k8s/ (worker.yaml, see infra/k8s/README.md). "
            f"Workers seen before: {seen or 'none'}.")


def wait_for_end(client: SyncPrefectClient, remote: FlowRun, timeout_s: float, poll_s: float) -> FlowRun | None:
    """The run once its state is final, or None when `timeout_s` passed first; logs each new state."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        run = client.read_flow_run(remote.id)
        if run.state and run.state.name != seen:
            seen = run.state.name
            log().info("run %s of the train stage: %s", remote.name, seen)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))


def cancel(client: SyncPrefectClient, remote: FlowRun) -> State | None:
    """Ask for `remote`'s cancellation as `prefect flow-run cancel` does; the state it was in.

    A run still waiting for a worker becomes Cancelled at once; a running one becomes Cancelling and
    its worker stops it. A failure to cancel is logged, never raised over the error being reported.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    last = None
    try:
        last = client.read_flow_run(remote.id).state
        client.set_flow_run_state(remote.id, State(type=StateType.CANCELLING))
        log().warning("cancelled run %s (%s) of the train stage (it was %s)", remote.name, remote.id,
                      last.name if last else "without a state")
    except Exception as exc:
        log().warning("could not cancel run %s (%s): %s; cancel it with `prefect flow-run cancel %s`",
                      remote.name, remote.id, exc, remote.id)
    return last


def timeout_message(deployment: str, remote: FlowRun, timeout_s: float, last: State | None) -> str:
    """Why the stage failed, which run was cancelled, and what to look at."""
    from prefect.client.schemas.objects import StateType

    if last is not None and last.type in (StateType.SCHEDULED, StateType.PENDING):
        hint = ("it never started: check that the pool's worker is healthy and can take it "
                "(`prefect work-pool inspect <pool>`, the worker's own log)")
    else:
        hint = ("it was still running: check its logs in the Prefect UI (a stuck step, a lost worker or pod), "
                "and give the flow a longer train timeout if the training simply needs more time")
    state = last.name if last else "in an unknown state"
    return (f"train stage on {deployment!r} timed out after {timeout_s:g} s: run {remote.name} ({remote.id}) "
            f"was {state} and has been cancelled; {hint}.")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def log() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a flow or task run, a plain logger elsewhere (tests, a console)."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flowtune.remote_train")
