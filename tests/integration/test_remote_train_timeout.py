"""`train_on` never hangs: flows.orchestration.remote_train.run_remote against a real Prefect server.

Each test makes a work pool of its own and a deployment of a flow that sleeps. Without a polling
worker the stage fails before any run is created; with a worker that never finishes the run (one
that only heartbeats, or a real `prefect worker` running a flow that sleeps) the wait ends at the
timeout and the remote run is cancelled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.orchestration.remote_train import run_remote
from flows.orchestration.steps import StageError
from tasks.settings import Settings
from tests.helpers import stop_worker

pytestmark = pytest.mark.integration

SLEEPER = "import time\nfrom prefect import flow\n\n\n@flow\ndef sleeper():\n    time.sleep(600)\n"


@pytest.fixture()
def client(local_services: Settings) -> Iterator:
    """A sync client of the private server; also the API the code under test talks to."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: local_services.api_url,
                                     PREFECT_API_AUTH_STRING: local_services.prefect_api_auth_string}):
        with get_client(sync_client=True) as client:
            yield client


def make_deployment(client, folder: Path) -> tuple[str, str]:
    """A process pool of its own and a deployment on it of a flow that sleeps; (pool, 'flow/deployment')."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    pool = f"timeout-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                           base_job_template=ProcessWorker.get_default_base_job_template()))
    (folder / "sleeper.py").write_text(SLEEPER)
    flow_id = client.create_flow_from_name("sleeper")
    client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=pool, path=str(folder),
                             entrypoint="sleeper.py:sleeper")
    return pool, f"sleeper/{pool}"


def runs_of(client, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    ids = DeploymentFilter(id=DeploymentFilterId(any_=[client.read_deployment_by_name(deployment).id]))
    return client.read_flow_runs(deployment_filter=ids)


def test_no_polling_worker_fails_at_once_naming_the_pool_and_the_fix(client, tmp_path):
    pool, deployment = make_deployment(client, tmp_path)
    started = time.monotonic()
    with pytest.raises(StageError) as error:
        run_remote(deployment, {}, timeout_s=600)
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert f"no worker is polling its work pool {pool!r}" in message
    assert f"`prefect worker start --pool {pool}`" in message and "infra/k8s/" in message
    assert runs_of(client, deployment) == []  # nothing was queued to wait for a worker that never comes


def test_an_unknown_deployment_is_named(client):
    with pytest.raises(StageError, match="no deployment 'sleeper/nowhere' on this Prefect server"):
        run_remote("sleeper/nowhere", {}, timeout_s=600)


def test_a_paused_pool_fails_at_once_with_how_to_resume(client, tmp_path):
    from prefect.client.schemas.actions import WorkPoolUpdate

    pool, deployment = make_deployment(client, tmp_path)
    client.send_worker_heartbeat(pool, "only-a-heartbeat")
    client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
    with pytest.raises(StageError, match=f"is paused.*`prefect work-pool resume {pool}`"):
        run_remote(deployment, {}, timeout_s=600)


def test_a_run_no_worker_takes_is_cancelled_at_the_timeout(client, tmp_path):
    pool, deployment = make_deployment(client, tmp_path)
    client.send_worker_heartbeat(pool, "heartbeat-only", heartbeat_interval_seconds=30)  # online, takes nothing
    started = time.monotonic()
    with pytest.raises(StageError) as error:
        run_remote(deployment, {}, timeout_s=3, poll_s=0.5)
    assert 3 <= time.monotonic() - started < 15
    (run,) = runs_of(client, deployment)
    assert f"timed out after 3 s: run {run.name} ({run.id}) was Scheduled and has been cancelled" in str(error.value)
    assert "it never started" in str(error.value)
    assert run.state.type.value == "CANCELLED"  # a run without infrastructure is cancelled at once


@pytest.fixture()
def worker(local_service_env: dict[str, str], tmp_path: Path) -> Iterator:
    """Start a real process worker for a pool: call it with the pool's name."""
    started: list[subprocess.Popen] = []

    def start(pool: str) -> subprocess.Popen:
        env = {**os.environ, **local_service_env, "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
        log = (tmp_path / "worker.log").open("w")
        process = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", pool],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_worker(process)


@pytest.mark.slow
def test_a_running_remote_run_is_cancelled_at_the_timeout_and_its_worker_stops_it(client, tmp_path, worker):
    pool, deployment = make_deployment(client, tmp_path)
    worker(pool)
    deadline = time.monotonic() + 60
    while not [w for w in client.read_workers_for_work_pool(pool) if w.status.value == "ONLINE"]:
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
        time.sleep(0.5)
    with pytest.raises(StageError) as error:
        run_remote(deployment, {}, timeout_s=25, poll_s=1)
    (run,) = runs_of(client, deployment)
    assert f"timed out after 25 s: run {run.name} ({run.id}) was Running and has been cancelled" in str(error.value)
    deadline = time.monotonic() + 60
    while (state := client.read_flow_run(run.id).state).type.value != "CANCELLED":
        assert state.type.value == "CANCELLING" and time.monotonic() < deadline, state
        time.sleep(1)
