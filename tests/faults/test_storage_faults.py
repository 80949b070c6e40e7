"""S3 down during the flow's `dvc push`: a clean failure after the task's real retries, and after a restart
the push completes with nothing lost.

A small DVC repository (a few MB in two tracked folders) pushes to a SeaweedFS of this module's own; the
first folder is pushed while S3 is up, then SeaweedFS is killed with SIGKILL and the flow's `dvc-push`
task runs (inside a flow on the session's Prefect server, so its retries and their delays happen).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prefect import flow

from flows.ops.services import wire_dvc_remote
from flows.orchestration.steps import StageError, dvc_push
from tests.faults.conftest import kill_s3, start_s3
from tests.helpers import ROOT, api_post, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILES, FILE_KB = 4, 512  # per folder: 2 MiB each, 4 MiB in all
RETRY_DELAYS_S = tuple(dvc_push.retry_delay_seconds)  # flows/orchestration/steps.py's: [5, 20] today


@flow(name="fault-dvc-push")
def push_flow() -> None:
    """The flow's push step alone: the same task, retries and delays as the pipeline's."""
    dvc_push()


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(ROOT / ".venv/bin/dvc"), *args], cwd=repo, env=clean_env(), capture_output=True,
                            text=True, timeout=300)
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


def tracked_folder(repo: Path, name: str) -> Path:
    """FILES random files under data/<name>, added to DVC (the cache holds them from now on)."""
    folder = repo / "data" / name
    folder.mkdir(parents=True)
    for index in range(FILES):
        (folder / f"part-{index}.bin").write_bytes(os.urandom(FILE_KB << 10))
    dvc(repo, "add", f"data/{name}")
    return folder


def dvc_repo(path: Path, settings) -> Path:
    """`git init` + `dvc init` with the project's remote `storage`, wired to the private SeaweedFS."""
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    dvc(path, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")
    wire_dvc_remote(settings, path)
    return path


def not_in_remote(repo: Path) -> list[str]:
    """`dvc status -c` lines of objects the local cache has and the remote lacks."""
    lines = dvc(repo, "status", "-c").stdout.splitlines()
    return [line for line in lines if line.strip().startswith(("new:", "missing:", "deleted:"))]


def test_s3_killed_before_dvc_push_fails_cleanly_and_a_rerun_pushes_everything(
        private_s3, prefect_client_of, tmp_path, monkeypatch, reliability) -> None:
    settings = private_s3
    repo = dvc_repo(tmp_path / "repo", settings)
    monkeypatch.chdir(repo)  # the task runs `dvc push` in the current directory, as in a checkout
    tracked_folder(repo, "first")
    assert push_flow(return_state=True).is_completed()
    tracked_folder(repo, "second")

    kill_s3(settings)
    started = time.monotonic()
    state = push_flow(return_state=True)
    seconds_to_fail = time.monotonic() - started
    error = state.result(raise_on_failure=False)
    assert state.is_failed(), state
    assert isinstance(error, StageError), repr(error)
    message = str(error)
    assert message.startswith("dvc push failed (exit 255):") and "Traceback" not in message, message
    attempts = push_attempts(prefect_client_of, state.state_details.flow_run_id)
    assert attempts == dvc_push.retries + 1  # the first try and every retry really ran, after their delays
    assert seconds_to_fail >= sum(RETRY_DELAYS_S)

    restarted = time.monotonic()
    start_s3(settings)
    restart_s = time.monotonic() - restarted
    # What the first push wrote survived the SIGKILL: only the second folder is missing remotely.
    missing_after_restart = not_in_remote(repo)
    assert missing_after_restart and all("second" in line for line in missing_after_restart), missing_after_restart

    assert push_flow(return_state=True).is_completed()
    assert not_in_remote(repo) == []
    assert "up to date" in dvc(repo, "status").stdout.lower()  # the workspace matches the local cache

    pulled = pull_elsewhere(repo, tmp_path / "elsewhere")
    assert same_files(repo / "data", pulled / "data")

    reliability(fault="S3 (SeaweedFS) killed with SIGKILL before the flow's `dvc push`",
                happened=f"dvc-push task failed after {attempts} attempts (retry delays {RETRY_DELAYS_S} s) with one "
                         f"StageError: {dvc_error(message)}; after `services up` the re-run pushed the rest",
                recovered=True, lost="nothing (objects pushed before the kill survived; a fresh pull matches)",
                seconds_to_fail=round(seconds_to_fail, 1), attempts=attempts,
                seconds_per_attempt=round((seconds_to_fail - sum(RETRY_DELAYS_S)) / attempts, 1),
                seconds_to_restart_s3=round(restart_s, 1),
                objects_missing_after_restart=len(missing_after_restart), megabytes=2 * FILES * FILE_KB / 1024)


def dvc_error(message: str) -> str:
    """DVC's `ERROR: ...` line, with the private endpoint's port left out (it differs each run)."""
    return without_port(next(line for line in message.splitlines() if line.startswith("ERROR")))


def without_port(line: str) -> str:
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)


def push_attempts(settings, flow_run_id) -> int:
    """How many times the flow run's dvc-push task ran (Prefect's `run_count`)."""
    query = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}
    runs = api_post(settings, "task_runs/filter", json=query).json()
    return next(run["run_count"] for run in runs if run["name"] == "dvc-push")


def pull_elsewhere(repo: Path, dest: Path) -> Path:
    """A copy of the repo without its cache, filled by `dvc pull`: proof the remote holds every object."""
    shutil.copytree(repo, dest, ignore=shutil.ignore_patterns("cache", "tmp", "first", "second"))
    dvc(dest, "pull", "-q")
    return dest


def same_files(left: Path, right: Path) -> bool:
    names = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    return all((left / name).read_bytes() == (right / name).read_bytes() for name in names)


def test_s3_killed_during_a_dvc_pull_leaves_no_partial_folder_and_a_rerun_pulls_the_rest(
        private_s3, tmp_path, reliability) -> None:
    """A clone pulls one folder, then S3 dies and the pull of the rest fails: what was pulled stays whole, the
    other folder is absent (not half there), and after a restart the same `dvc pull` completes."""
    settings = private_s3
    start_s3(settings)  # up, whatever an earlier test of this module left
    repo = dvc_repo(tmp_path / "repo", settings)
    tracked_folder(repo, "first")
    tracked_folder(repo, "second")
    dvc(repo, "push", "-q")
    clone = tmp_path / "clone"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache", "tmp", "first", "second"))
    dvc(clone, "pull", "-q", "data/first.dvc")

    kill_s3(settings)
    started = time.monotonic()
    failed = dvc(clone, "pull", check=False)
    seconds_to_fail = time.monotonic() - started
    assert failed.returncode != 0
    error = next((line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("ERROR")), "")
    assert error, failed.stdout + failed.stderr
    assert same_files(repo / "data" / "first", clone / "data" / "first")  # what was pulled stays whole
    second = clone / "data" / "second"
    assert not second.exists() or not any(second.iterdir()), sorted(second.iterdir())

    start_s3(settings)
    dvc(clone, "pull", "-q")
    assert same_files(repo / "data", clone / "data")
    reliability(fault="S3 (SeaweedFS) killed with SIGKILL between two `dvc pull`s of a fresh clone",
                happened=f"the pull failed (exit {failed.returncode}) with {without_port(error)}; "
                         "the folder pulled before stayed whole, the other was not created; after `services up` "
                         "the same `dvc pull` completed",
                recovered=True, lost="nothing (a fresh pull matches the pushed files byte for byte)",
                seconds_to_fail=round(seconds_to_fail, 1))
