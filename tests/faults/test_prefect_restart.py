"""The Prefect server restarted while a flow run trains: the run ends (not hung), a re-run completes
without manual cleanup, and the DVC record is consistent.

A flow of the real `repro_stage` task reproduces the real train stage (a tiny BERT, one thread, holding
the `gpu` slot's lease) in a scratch clone, in a subprocess, against a Prefect server of this module's
own (SeaweedFS stays the session's). As soon as training prints its first step, the server is stopped
(SIGTERM, as `flowtune services down` does), left down a few seconds and started again.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from flows.ops import services
from tests.conftest import private_settings
from tests.faults.train_flow import FlowProcess, flow_runs, stage_processes, train_clone
from tests.helpers import api_get, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOW_NAME = "fault-prefect-restart"
DOWN_S = 5  # how long the server stays stopped before `services.up`
RUN_BOUND_S = 120  # a run not over this long after the restart counts as hung
# The re-run must not wait for the first run's slot longer than its lease allows (60 s + the server's
# 15 s repossession cycle) plus its own few seconds.
RERUN_BOUND_S = 100


@pytest.fixture(scope="module")
def private_prefect(tmp_path_factory, local_services):
    """A Prefect server of this module's own (safe to stop), using the session's SeaweedFS."""
    workdir = tmp_path_factory.mktemp("private-prefect")
    settings = private_settings(workdir, s3_endpoint_url=local_services.endpoint_url, start_worker=False,
                                s3_access_key_id=local_services.s3_access_key_id,
                                s3_secret_access_key=local_services.s3_secret_access_key)
    assert services.prefect_is_local(settings) and not services.s3_is_local(settings)
    # Its API login, generated into its folder's .env: every client below (the flow, the API calls) sends it.
    settings = services.ensure_credentials(settings, workdir / ".env")
    assert settings.prefect_api_auth_string is not None
    up_from(workdir, settings)
    try:
        yield settings
    finally:
        services.down(settings)


def up_from(folder: Path, settings) -> float:
    """`services.up` run from `folder` (it wires the DVC remote of the current directory); seconds."""
    previous, started = Path.cwd(), time.monotonic()
    os.chdir(folder)
    try:
        services.up(settings)
    finally:
        os.chdir(previous)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_base, private_prefect) -> Path:
    """A scratch clone whose train stage trains for some seconds, logging every step."""
    return train_clone(tmp_path_factory.mktemp("clone"), tiny_base, private_prefect, FLOW_NAME,
                       sentences=48, epochs=4, log_every_steps=1)


def gpu_slots(settings) -> dict:
    """The `gpu` limit's slot count and active slots as the server sees them."""
    limit = api_get(settings, "v2/concurrency_limits/gpu").json()
    return {key: limit.get(key) for key in ("limit", "active_slots")}


def dvc_status(repo: Path) -> str:
    result = subprocess.run([".venv/bin/dvc", "status", "train"], cwd=repo, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def restart_mid_stage(run: FlowProcess, settings) -> dict:
    """Stop the server once training prints its first step, start it DOWN_S later; the timings (s)."""
    run.wait_for("train: epoch 1/", timeout_s=180)
    stopped_at = time.monotonic()
    assert services.stop(settings, "prefect-server") == ["prefect-server"]
    stop_s = time.monotonic() - stopped_at
    time.sleep(DOWN_S)
    restart_s = up_from(settings.state_dir.parent, settings)
    return {"stopped_at": stopped_at, "seconds_server_stop": round(stop_s, 1),
            "seconds_server_restart": round(restart_s, 1),
            "seconds_server_down": round(time.monotonic() - stopped_at, 1)}


def test_prefect_server_restarted_mid_run_ends_the_run_and_a_rerun_completes(
        private_prefect, clone, reliability) -> None:
    settings, repo = private_prefect, clone
    # What lets the re-run get the `gpu` slot: leases on disk survive the restart (in memory, the default,
    # the restart forgot the held slot's lease and the re-run waited for it for ever).
    assert services.prefect_server(settings).env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith(".filesystem")
    run = FlowProcess(repo, settings)
    timings = restart_mid_stage(run, settings)
    exit_code = run.finish(timeout_s=RUN_BOUND_S)
    ended_after_s = round(time.monotonic() - timings.pop("stopped_at"), 1)

    assert exit_code is not None, f"the run hung: still running {RUN_BOUND_S} s after the restart:\n" + \
        run.output[-4000:]
    first = flow_runs(settings, FLOW_NAME)[-1]
    assert first["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}, first["state_type"]
    assert (exit_code == 0) == (first["state_type"] == "COMPLETED"), (exit_code, first["state_type"])
    assert not stage_processes(repo)  # nothing of the first run still trains
    stage_finished = "train: best epoch" in run.output and "Updating lock file 'dvc.lock'" in run.output
    release_failed = "release_concurrency_slots_with_lease" in run.output
    slots_after_first = gpu_slots(settings)["active_slots"]

    rerun = FlowProcess(repo, settings)
    rerun_exit = rerun.finish(timeout_s=RERUN_BOUND_S)
    second = flow_runs(settings, FLOW_NAME)[-1]
    status = dvc_status(repo)
    recovered = rerun_exit == 0 and second["state_type"] == "COMPLETED" and "up to date" in status.lower()
    skipped = "Stage 'train' didn't change, skipping" in rerun.output

    reliability(fault=f"Prefect server stopped (SIGTERM) while the train stage ran, restarted {DOWN_S} s later",
                happened=first_run_story(exit_code, first, stage_finished, release_failed)
                + (f"; re-run Completed ({'DVC skipped the stage' if skipped else 'trained again'})" if recovered
                   else f"; re-run hung on the `gpu` slot (active_slots {slots_after_first} with no live holder), "
                        f"killed after {RERUN_BOUND_S} s"),
                recovered=recovered,
                lost="nothing (dvc.lock and model written by the first run; dvc status clean, no stage left)"
                if recovered else "nothing on disk; every later train stage blocked until the slot is reset by hand",
                **timings, seconds_run_ended_after_stop=ended_after_s, first_run_exit=exit_code,
                gpu_active_slots_after_first_run=slots_after_first)

    assert rerun_exit == 0, (gpu_slots(settings), rerun.output[-4000:])
    assert second["id"] != first["id"] and second["state_type"] == "COMPLETED", second["state_type"]
    assert "up to date" in status.lower(), status


def first_run_story(exit_code: int, first: dict, stage_finished: bool, release_failed: bool) -> str:
    story = f"first run exit {exit_code}, {first['state_type']}"
    if stage_finished and exit_code != 0:
        story += " although its stage had finished and written dvc.lock"
    if release_failed:
        story += " (releasing the `gpu` slot met the stopped server: ConnectError, not retried by a new client)"
    return story
