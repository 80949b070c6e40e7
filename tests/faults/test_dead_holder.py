"""A `flowtune run` killed with SIGKILL stays Running on the Prefect server (no process is left to report
its end). The next run in the same checkout finds the dead holder in the checkout lock and marks that
flow run Crashed, so the UI and notifications tell the truth without manual cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.ops.services import prefect_auth_env
from tests.helpers import ROOT, api_get, clean_env

pytestmark = [pytest.mark.integration]

HOLDER = """
import time
from pathlib import Path
from prefect import flow
from flows.orchestration.workspace import run_workspace
from tasks.settings import Settings

@flow(name="fault-dead-holder")
def hold() -> None:
    from prefect.runtime import flow_run
    with run_workspace("in-place", str(flow_run.get_id()), Settings(_env_file=None)):
        print("holding", flush=True)
        time.sleep(300)

hold()
"""


def test_a_run_that_died_holding_the_checkout_is_marked_crashed(tmp_path: Path, prefect_client_of, monkeypatch,
                                                                 reliability):
    from prefect import flow

    from flows.orchestration.pipeline import crash_dead_holder
    from flows.orchestration.workspace import run_workspace
    from tasks.settings import Settings

    api = prefect_client_of.api_url
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                              env=clean_env(PREFECT_API_URL=api, PYTHONPATH=str(ROOT),
                                            **prefect_auth_env(prefect_client_of)))
    assert holder.stdout.readline().strip() == "holding"
    dead_run = json.loads((tmp_path / ".dvc" / "tmp" / "flowtune-run.lock").read_text())["flow_run_id"]
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert api_get(prefect_client_of, f"flow_runs/{dead_run}").json()["state_type"] == "RUNNING"  # stuck for ever

    monkeypatch.chdir(tmp_path)

    @flow(name="fault-next-run")
    def next_run() -> None:
        from prefect.runtime import flow_run

        with run_workspace("in-place", str(flow_run.get_id()), Settings(_env_file=None),
                           on_stale_holder=crash_dead_holder):
            pass

    started = time.monotonic()
    assert next_run(return_state=True).is_completed()
    state = api_get(prefect_client_of, f"flow_runs/{dead_run}").json()["state"]
    assert state["type"] == "CRASHED" and f"pid {holder.pid}" in state["message"], state
    reliability(fault="`flowtune run` killed with SIGKILL (the flow process itself)",
                happened="its flow run stayed Running on the server; the next run in that checkout found it in the "
                         "checkout lock and marked it Crashed, naming the dead pid",
                recovered=True, lost="nothing (the checkout lock was free at once: the kernel drops a dead flock)",
                seconds_to_mark=round(time.monotonic() - started, 1))
