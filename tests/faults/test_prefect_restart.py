"""The Prefect server restarted while a flow run trains: the run ends (not hung), a re-run completes
without manual cleanup, and the DVC record is consistent.

A flow of the real `run_stage` task reproduces the real train stage (a tiny BERT, one thread, holding
the `gpu` slot's lease) in a scratch clone, in a subprocess, against a Prefect server of this module's
own (SeaweedFS stays the session's). As soon as training prints its first step, the server is stopped
(SIGTERM, as `flowtune services down` does), left down a few seconds and started again.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from flows import services
from tasks.io import write_jsonl
from tests.conftest import private_settings
from tests.helpers import api_get, api_post, clean_env, client_env_file, scratch_clone, set_params, synthetic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOW_NAME = "fault-prefect-restart"
DOWN_S = 5  # how long the server stays stopped before `services.up`
RUN_BOUND_S = 120  # a run not over this long after the restart counts as hung
# The re-run must not wait for the first run's slot longer than its lease allows (60 s + the server's
# 15 s repossession cycle) plus its own few seconds.
RERUN_BOUND_S = 100
FLOW_SCRIPT = f'''
"""One flow: the pipeline's train task (dvc repro --single-item train) on this checkout."""
from prefect import flow

from flows.steps import run_settings, run_stage
from tasks.params import load_params


@flow(name="{FLOW_NAME}")
def train_only() -> None:
    run_stage("train", load_params("params.yaml"), run_settings())


if __name__ == "__main__":
    train_only()
'''


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
def train_clone(tmp_path_factory, tiny_base, private_prefect) -> Path:
    """A scratch clone whose train stage has its inputs and trains a tiny BERT for some seconds."""
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    set_params(repo, task={"labels": ["person", "geo-loc"]},
               train={"base_model": str(tiny_base), "max_length": 16, "epochs": 4, "batch_size": 4,
                      "num_threads": 1, "log_every_steps": 1, "checkpoint_every_steps": 5})
    write_jsonl(repo / "data/augmented/train.jsonl", synthetic(48, 1))
    write_jsonl(repo / "data/augmented/dev.jsonl", synthetic(16, 2))
    (repo / "data/reports/contract_augmented.json").parent.mkdir(parents=True, exist_ok=True)
    (repo / "data/reports/contract_augmented.json").write_text('{"success": true}\n')
    (repo / "fault_flow.py").write_text(FLOW_SCRIPT)
    (repo / ".env").write_text(client_env_file(private_prefect))
    return repo


class FlowProcess:
    """`python fault_flow.py` in the clone; its output lines are collected by a thread as they come."""

    def __init__(self, repo: Path, settings) -> None:
        env = clean_env(PYTHONPATH=str(repo), **services.service_env(settings))
        self.process = subprocess.Popen([str(repo / ".venv/bin/python"), "fault_flow.py"], cwd=repo, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, marker: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(marker in line for line in self.lines):
            assert self.process.poll() is None, f"the run ended before {marker!r}:\n" + self.output[-4000:]
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout_s} s:\n" + self.output[-4000:]
            time.sleep(0.2)

    def finish(self, timeout_s: float) -> int | None:
        """The exit status, or None (the whole process group killed) when it runs past `timeout_s`."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
            return None
        finally:
            self.reader.join(timeout=10)

    @property
    def output(self) -> str:
        return "".join(self.lines)


def flow_runs(settings) -> list[dict]:
    query = {"flows": {"name": {"any_": [FLOW_NAME]}}, "sort": "START_TIME_ASC"}
    return api_post(settings, "flow_runs/filter", json=query).json()


def stage_processes(repo: Path) -> list[str]:
    """Command lines of live processes started in the clone (a stage that outlived its flow)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == repo:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


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
        private_prefect, train_clone, reliability) -> None:
    settings, repo = private_prefect, train_clone
    # What lets the re-run get the `gpu` slot: leases on disk survive the restart (in memory, the default,
    # the restart forgot the held slot's lease and the re-run waited for it for ever).
    assert services.prefect_server(settings).env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith(".filesystem")
    run = FlowProcess(repo, settings)
    timings = restart_mid_stage(run, settings)
    exit_code = run.finish(timeout_s=RUN_BOUND_S)
    ended_after_s = round(time.monotonic() - timings.pop("stopped_at"), 1)

    assert exit_code is not None, f"the run hung: still running {RUN_BOUND_S} s after the restart:\n" + \
        run.output[-4000:]
    first = flow_runs(settings)[-1]
    assert first["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}, first["state_type"]
    assert (exit_code == 0) == (first["state_type"] == "COMPLETED"), (exit_code, first["state_type"])
    assert stage_processes(repo) == []  # nothing of the first run still trains
    stage_finished = "train: best epoch" in run.output and "Updating lock file 'dvc.lock'" in run.output
    release_failed = "release_concurrency_slots_with_lease" in run.output
    slots_after_first = gpu_slots(settings)["active_slots"]

    rerun = FlowProcess(repo, settings)
    rerun_exit = rerun.finish(timeout_s=RERUN_BOUND_S)
    second = flow_runs(settings)[-1]
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
