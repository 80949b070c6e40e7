"""The flow process SIGKILLed while the train stage trains (an OOM kill, a node lost, `kill -9`):
nothing of the stage survives it, the DVC lock and the `gpu` slot come free, and the same flow run
again resumes from the last checkpoint and completes.

A flow of the real `repro_stage` task reproduces the real train stage (`dvc repro --single-item train`
under flows/orchestration/supervise.py: a tiny BERT, one thread, holding a slot of the global `gpu` limit) in a
scratch clone, in a subprocess, against the session's Prefect server. As soon as training has written
a checkpoint, the flow process alone is SIGKILLed (not its group: the stage must be stopped by the
supervisor, not by the test).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.ops import services
from flows.orchestration.steps import ACCELERATOR_LEASE_S
from tests.faults.train_flow import FlowProcess, flow_runs, stage_processes, train_clone
from tests.helpers import api_get, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]

FLOW_NAME = "fault-killed-mid-train"
ORPHAN_DEADLINE_S = 10  # the requirement: nothing of the stage left this long after the SIGKILL
# The server's repossessor runs every 15 s: a dead holder's slot is free <= lease + 15 s after its
# last renewal; the slack covers a loaded machine.
SLOT_DEADLINE_S = ACCELERATOR_LEASE_S + 15 + 15
CHECKPOINT = "data/models/checkpoints/checkpoint.pt"  # params.yaml paths.train_checkpoints


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_base, local_services) -> Path:
    """A scratch clone whose train stage trains for some seconds, a checkpoint every few steps."""
    return train_clone(tmp_path_factory.mktemp("killed-mid-train"), tiny_base, local_services, FLOW_NAME,
                       sentences=200, epochs=3, log_every_steps=5)


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
    return [run["state_name"] for run in flow_runs(settings, FLOW_NAME)]


def test_a_flow_sigkilled_mid_train_leaves_nothing_and_a_rerun_resumes(local_services, clone, reliability):
    settings, repo = local_services, clone
    assert services.ensure_accelerator_limit(settings) >= 1
    # A dead holder of an earlier test would make these numbers wrong: start from a free limit.
    wait_until(lambda: active_gpu_slots(settings) == 0, SLOT_DEADLINE_S, "the gpu limit is free", 1)

    started = time.monotonic()
    run = FlowProcess(repo, settings)
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

    rerun, rerun_started = FlowProcess(repo, settings), time.monotonic()
    try:
        exit_code = rerun.finish(timeout_s=240)
    finally:
        rerun.cleanup()
    print(f"re-run took {time.monotonic() - rerun_started:.1f} s")
    assert exit_code is not None, "the re-run still ran after 240 s:\n" + rerun.output[-4000:]
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
