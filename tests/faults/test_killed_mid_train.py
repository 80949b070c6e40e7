"""The flow process SIGKILLed while the train stage trains (an OOM kill, a node lost, `kill -9`):
nothing of the stage survives it, the DVC lock and the `gpu` slot come free, and the same flow run
again resumes from the last checkpoint and completes.

A flow of the real `run_stage` task reproduces the real train stage (`dvc repro --single-item train`
under flows/supervise.py: a tiny BERT, one thread, holding a slot of the global `gpu` limit) in a
scratch clone, in a subprocess, against the session's Prefect server. As soon as training has written
a checkpoint, the flow process alone is SIGKILLed (not its group: the stage must be stopped by the
supervisor, not by the test).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows import services
from flows.steps import ACCELERATOR_LEASE_S
from tasks.io import write_jsonl
from tests.helpers import api_get, api_post, clean_env, client_env_file, scratch_clone, set_params, synthetic

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]

FLOW_NAME = "fault-killed-mid-train"
ORPHAN_DEADLINE_S = 10  # the requirement: nothing of the stage left this long after the SIGKILL
# The server's repossessor runs every 15 s: a dead holder's slot is free <= lease + 15 s after its
# last renewal; the slack covers a loaded machine.
SLOT_DEADLINE_S = ACCELERATOR_LEASE_S + 15 + 15
CHECKPOINT = "data/models/checkpoints/checkpoint.pt"  # params.yaml paths.train_checkpoints
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
def clone(tmp_path_factory, tiny_base, local_services) -> Path:
    """A scratch clone whose train stage has its inputs: a tiny BERT, some seconds of training on one
    thread, a checkpoint every few steps."""
    repo = scratch_clone(tmp_path_factory.mktemp("killed-mid-train"))
    set_params(repo, task={"labels": ["person", "geo-loc"]},
               train={"base_model": str(tiny_base), "max_length": 16, "epochs": 3, "batch_size": 4,
                      "num_threads": 1, "log_every_steps": 5, "checkpoint_every_steps": 5})
    write_jsonl(repo / "data/augmented/train.jsonl", synthetic(200, 1))
    write_jsonl(repo / "data/augmented/dev.jsonl", synthetic(16, 2))
    (repo / "data/reports/contract_augmented.json").parent.mkdir(parents=True, exist_ok=True)
    (repo / "data/reports/contract_augmented.json").write_text('{"success": true}\n')
    (repo / "fault_flow.py").write_text(FLOW_SCRIPT)
    (repo / ".env").write_text(client_env_file(local_services))
    return repo


class Flow:
    """`python fault_flow.py` in the clone (a session of its own, for the cleanup); output collected."""

    def __init__(self, repo: Path, settings) -> None:
        env = clean_env(PYTHONPATH=str(repo), **services.service_env(settings))
        self.process = subprocess.Popen([str(repo / ".venv/bin/python"), "fault_flow.py"], cwd=repo, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the flow still runs after {timeout_s} s:\n{self.output[-4000:]}")
        finally:
            self.reader.join(timeout=10)

    def cleanup(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def stage_processes(repo: Path) -> dict[int, str]:
    """pid -> command line of each live process working in the clone (dvc, the supervisor, the trainer)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == repo and " Z " not in (proc / "stat").read_text():
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone, or a zombie (its cwd no longer readable)
            continue
    return found


def active_gpu_slots(settings) -> int:
    limit = api_get(settings, f"v2/concurrency_limits/{services.ACCELERATOR_LIMIT}")
    limit.raise_for_status()
    return limit.json()["active_slots"]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Seconds until `condition()` held; fails the test after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what}: still not true after {timeout_s} s"
        time.sleep(poll_s)
    return time.monotonic() - start


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / ".venv/bin/dvc"), *args], cwd=repo, env=clean_env(DVC_NO_ANALYTICS="1"),
                          capture_output=True, text=True, timeout=120)


def flow_run_states(settings) -> list[str]:
    query = {"flows": {"name": {"any_": [FLOW_NAME]}}, "sort": "START_TIME_ASC"}
    return [run["state_name"] for run in api_post(settings, "flow_runs/filter", json=query).json()]


def test_a_flow_sigkilled_mid_train_leaves_nothing_and_a_rerun_resumes(local_services, clone, reliability):
    settings, repo = local_services, clone
    assert services.ensure_accelerator_limit(settings) >= 1
    # A dead holder of an earlier test would make these numbers wrong: start from a free limit.
    wait_until(lambda: active_gpu_slots(settings) == 0, SLOT_DEADLINE_S, "the gpu limit is free", 1)

    started = time.monotonic()
    run = Flow(repo, settings)
    try:
        checkpoint = repo / CHECKPOINT
        wait_until(lambda: checkpoint.is_file() or run.process.poll() is not None, 240, "a checkpoint")
        stage = stage_processes(repo)
        slots_held = active_gpu_slots(settings)
        run.process.send_signal(signal.SIGKILL)  # the flow process only: not its group
        killed = time.monotonic()
        print(f"checkpoint {killed - started:.1f} s after the flow started")
        run.process.wait()
    finally:
        run.cleanup()
    run.reader.join(timeout=10)
    assert run.process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{run.output[-4000:]}"
    # It was mid-train: dvc and the trainer were alive, the slot held.
    assert any("tasks.train" in cmd for cmd in stage.values()), stage
    assert any("dvc repro" in cmd for cmd in stage.values()), stage
    assert slots_held == 1
    # Epoch 1's steps are global steps (the first checkpoint comes at step 5 of 50).
    steps_logged = [int(n) for n in re.findall(r"train: epoch 1/\d+ step (\d+)/", run.output)]

    orphans_s = wait_until(lambda: not stage_processes(repo), ORPHAN_DEADLINE_S, "no stage process left")
    # The repo lock and the stage's rwlock: a dry repro takes both (and runs nothing).
    again = dvc(repo, "repro", "--dry", "--single-item", "train")
    assert again.returncode == 0 and "Running stage 'train'" in again.stdout, again.stdout + again.stderr
    slot_s = time.monotonic() - killed + wait_until(lambda: active_gpu_slots(settings) == 0,
                                                    SLOT_DEADLINE_S, "the gpu slot is free", 0.5)
    killed_state = flow_run_states(settings)[-1]

    rerun, rerun_started = Flow(repo, settings), time.monotonic()
    try:
        exit_code = rerun.wait(timeout_s=240)
    finally:
        rerun.cleanup()
    print(f"re-run took {time.monotonic() - rerun_started:.1f} s")
    assert exit_code == 0, rerun.output[-4000:]
    assert flow_run_states(settings)[-1] == "Completed"
    resumed = re.search(r"train: resuming from \S+ at epoch (\d+), step (\d+) \(global step (\d+)\)", rerun.output)
    assert resumed, "the re-run did not resume from the checkpoint:\n" + rerun.output[-4000:]
    resumed_from = int(resumed.group(3))
    assert resumed_from >= 1
    status = dvc(repo, "status", "train")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    assert not checkpoint.exists()  # cleared once training ended
    assert not stage_processes(repo)

    retrained = max(0, max(steps_logged, default=0) - resumed_from)  # a lower bound: the log lags
    print(f"{retrained}+ steps after the checkpoint lost; stage gone {orphans_s:.2f} s, slot free {slot_s:.1f} s "
          f"after the SIGKILL; killed run left {killed_state!r}; re-run resumed from global step {resumed_from}")
    reliability(fault="flow SIGKILLed mid-train",
                happened=f"flow process SIGKILLed after training's checkpoint at global step {resumed_from}; "
                         f"the supervisor stopped dvc and the trainer, the dead run's `gpu` lease expired, "
                         f"the killed flow run stays {killed_state!r} on the server; "
                         "the re-run resumed from the checkpoint and completed",
                recovered=True,
                lost=f"only the steps trained after the last checkpoint ({retrained}+ logged, re-trained); "
                     "dvc status clean, no stage process left, checkpoint cleared",
                seconds_to_no_orphans=round(orphans_s, 2), seconds_to_free_gpu_slot=round(slot_s, 1),
                resumed_from_step=resumed_from)
