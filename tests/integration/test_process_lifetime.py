"""A SIGKILLed flow leaves no stage behind: a real `dvc repro --single-item`, run by run_logged.

A scratch DVC repo holds one stage whose command sleeps in a grandchild. A flow stand-in (a Python
process calling flows.orchestration.steps.run_logged, as the Prefect task does) starts it and is SIGKILLed mid-stage.
Within 10 s no process of the stage may be alive, and DVC's lock must be free for the next repro.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.slow
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


HOLDER = (
    "import sys, time\n"
    "from flows.orchestration import steps\n"
    "steps.ACCELERATOR_LIMIT = sys.argv[1]  # a limit of this test's own, not the session's `gpu`\n"
    "with steps.holding_accelerator('train'):\n"
    "    print('holding', flush=True)\n"
    "    time.sleep(600)\n"
)


@pytest.mark.slow
def test_the_gpu_slot_is_renewed_while_held(local_services, local_service_env):
    """A live holder keeps its slot past a lease's length (steps.ACCELERATOR_LEASE_S) plus the server's
    15 s repossessor loop: only a renewal explains that. How soon a SIGKILLed holder's slot comes free is
    measured in tests/faults/test_killed_mid_train.py, on the real flow and train stage."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.orchestration.steps import ACCELERATOR_LEASE_S

    limit = f"gpu-lease-{os.getpid()}-{time.monotonic_ns()}"
    with temporary_settings(updates={PREFECT_API_URL: local_services.api_url,
                                     PREFECT_API_AUTH_STRING: local_services.prefect_api_auth_string}), \
            get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))

        def active() -> int:
            return client.read_global_concurrency_limit_by_name(limit).active_slots

        holder = subprocess.Popen([sys.executable, "-c", HOLDER, limit], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, **local_service_env, "PYTHONPATH": str(ROOT)})
        try:
            assert holder.stdout.readline() == "holding\n"
            # past the first lease and the repossessor's next pass: an unrenewed lease would be gone
            time.sleep(ACCELERATOR_LEASE_S + 16)
            assert active() == 1 and holder.poll() is None
        finally:
            holder.kill()
            holder.wait()
            client.delete_global_concurrency_limit_by_name(limit)
