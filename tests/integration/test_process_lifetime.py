"""A SIGKILLed flow leaves no stage behind: a real `dvc repro --single-item`, run by run_logged.

A scratch DVC repo holds one stage whose command sleeps in a grandchild. A flow stand-in (a Python
process calling flows.steps.run_logged, as the Prefect task does) starts it and is SIGKILLed mid-stage.
Within 10 s no process of the stage may be alive, and DVC's lock must be free for the next repro.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.unit.test_process_lifetime import DEADLINE_S, RUN_LOGGED, kill_everything, tree_pids, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux prctl and /proc")]

# A grandchild of dvc sleeps; STAGE_SLEEP=0 (the second repro) makes the stage finish at once.
# ($STAGE_SLEEP, not ${...}: DVC would take that for its own interpolation.)
# The out puts the stage under DVC's rwlock, which a surviving `dvc repro` keeps: measured without the
# supervisor, the next repro fails "'nap.txt' is busy, it is being blocked by: (PID ...)".
STAGE_CMD = "sleep $STAGE_SLEEP & echo stage-started; wait; echo rested > nap.txt"


def scratch_dvc_repo(root: Path) -> Path:
    """A DVC repo without git holding the one stage `nap`."""
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"nap": {"cmd": STAGE_CMD, "outs": ["nap.txt"]}}}))
    return root


def test_a_sigkilled_flow_leaves_no_stage_process_and_frees_the_dvc_lock(tmp_path):
    repo = scratch_dvc_repo(tmp_path)
    marker = f"lifetime-{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "FLOWTUNE_TREE_MARKER": marker, "PYTHONPATH": str(ROOT), "STAGE_SLEEP": "300",
           "DVC_NO_ANALYTICS": "1"}
    log = tmp_path / "flow.log"
    flow = subprocess.Popen([sys.executable, "-c", RUN_LOGGED, "dvc", "repro", "--single-item", "nap"], cwd=repo,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "stage-started" in log.read_text() or flow.poll() is not None, 60)
        assert flow.poll() is None, log.read_text()
        # flow + supervisor + dvc + the stage's shell + sleep
        assert len(tree_pids(marker)) >= 5, log.read_text()
        flow.send_signal(signal.SIGKILL)
        flow.wait()
        took = wait_until(lambda: not tree_pids(marker), DEADLINE_S)
    finally:
        flow.kill()
        kill_everything(marker)
    print(f"stage tree gone {took:.2f} s after the SIGKILL")
    env["STAGE_SLEEP"] = "0"
    again = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "--single-item", "nap"], cwd=repo,
                           env=env, capture_output=True, text=True, timeout=120)
    # Neither the repo lock ("Unable to acquire lock") nor the stage's rwlock ("is busy") is held.
    assert again.returncode == 0 and "stage-started" in again.stdout, again.stdout + again.stderr
    assert (repo / "nap.txt").read_text() == "rested\n"
