"""A stage that hangs fails on time, leaves no process behind, and the next run's stage starts.

A scratch DVC repo holds one stage whose command waits for ever on a grandchild `sleep` (a hung
download, a deadlocked data loader). It runs as the flow runs every stage: `dvc repro --single-item`
through flows.orchestration.steps.run_logged, under the supervisor, with a 3 s limit. The run must fail with one line
naming the limit and the params key, no process of the stage may be alive, and DVC's locks must be
free, so the next queued run's `dvc repro` starts at once. The full flow adds nothing here (repro_stage
only passes `timeouts.<stage>` on) and would cost a Prefect run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.orchestration import steps
from tests.integration.test_process_lifetime import scratch_dvc_repo
from tests.unit.test_process_lifetime import DEADLINE_S, kill_everything, tree_pids

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux prctl and /proc")]

LIMIT_S = 3


def test_a_hung_stage_fails_on_time_and_the_next_run_starts(tmp_path, monkeypatch, reliability):
    repo = scratch_dvc_repo(tmp_path)
    marker = f"hung-{os.getpid()}-{tmp_path.name}"
    monkeypatch.chdir(repo)
    for name, value in (("FLOWTUNE_TREE_MARKER", marker), ("STAGE_SLEEP", "infinity"), ("DVC_NO_ANALYTICS", "1")):
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    try:
        with pytest.raises(steps.StageTimedOut) as timed_out:
            steps.run_logged(["dvc", "repro", "--single-item", "nap"], "stage 'nap'", timeout_s=LIMIT_S,
                             limit_from="timeouts.nap in params.yaml")
        seconds_to_fail = time.monotonic() - started
        left = tree_pids(marker)
    finally:
        kill_everything(marker)
    message = str(timed_out.value)
    assert message == (f"stage 'nap' ran over its {LIMIT_S} s limit (timeouts.nap in params.yaml); "
                       "its processes were stopped")
    assert not left, f"still alive after the stage failed: {sorted(left)}"
    assert seconds_to_fail < LIMIT_S + DEADLINE_S

    # The next run: its `dvc repro` takes the repo lock and the stage's rwlock, so it starts and completes.
    again = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "--single-item", "nap"],
                           env={**os.environ, "STAGE_SLEEP": "0"}, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "stage-started" in again.stdout, again.stdout + again.stderr
    assert (repo / "nap.txt").read_text() == "rested\n"

    reliability(fault=f"a stage hangs for ever (a grandchild of `dvc repro` sleeps; limit {LIMIT_S} s)",
                happened=f"the supervisor stopped dvc and the stage's processes at the limit; the run failed with "
                         f"one line: {message}",
                recovered=True,
                lost="nothing (no process left, DVC's locks free: the next run's `dvc repro` of the stage completed)",
                seconds_to_fail=round(seconds_to_fail, 2), limit_s=LIMIT_S)
