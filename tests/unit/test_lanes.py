"""The background lane of the test suite (tests/lanes.py): one job at a time, in order, nothing left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.lanes import Background, Job, Lane, SharedLane


def lane_in(tmp_path: Path) -> Lane:
    def folder(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path
    return Lane(folder)


def shell(name: str, script: str, timeout_s: float = 30, teardown: str = "") -> Background:
    def prepare(folder: Path) -> Job:
        return Job(folder, ["sh", "-c", script], dict(os.environ), timeout_s,
                   ["sh", "-c", teardown] if teardown else [])
    return Background(name, prepare)


def test_jobs_run_one_at_a_time_in_the_order_started(tmp_path: Path):
    lane = lane_in(tmp_path)
    stamps = tmp_path / "stamps"
    first = shell("first", f"echo first-start >> {stamps}; sleep 0.5; echo first-end >> {stamps}")
    second = shell("second", f"echo second-start >> {stamps}; echo out")
    lane.start(first)
    lane.start(second)
    done = lane.result(second)
    assert stamps.read_text().split() == ["first-start", "first-end", "second-start"]
    assert done.returncode == 0 and done.output == "out\n" and (done.repo / "second.log").is_file()
    assert lane.result(first).returncode == 0
    lane.stop()


def test_a_job_past_its_timeout_is_killed_and_says_so(tmp_path: Path):
    lane = lane_in(tmp_path)
    started = time.monotonic()
    done = lane.result(shell("slow", "sleep 30", timeout_s=0.5))
    assert time.monotonic() - started < 10
    assert done.returncode == -9 and "killed after its 0 s timeout" in done.output
    lane.stop()


def test_stop_kills_the_running_tree_and_runs_every_teardown(tmp_path: Path):
    lane = lane_in(tmp_path)
    pid_file, torn_down = tmp_path / "pid", tmp_path / "torn-down"
    lane.start(shell("tree", f"sleep 60 & echo $! > {pid_file}; wait", teardown=f"touch {torn_down}"))
    never = shell("never", f"touch {tmp_path / 'ran'}")
    lane.start(never)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the first job never started"
        time.sleep(0.05)
    lane.stop()
    assert torn_down.exists() and not (tmp_path / "ran").exists()
    grandchild = int(pid_file.read_text())
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]



def test_a_worker_gets_the_controllers_outcome_through_the_shared_folder(tmp_path: Path):
    """Under xdist the lane runs in the controller and a worker reads the outcome (tests/conftest.py)."""
    published = tmp_path / "lanes"
    controller = Lane(lambda name: (tmp_path / name).mkdir() or tmp_path / name, publish=published)
    worker = SharedLane(published, timeout_s=30, poll_s=0.05)
    job = shell("probe", "echo from-the-controller")
    controller.start(job)
    seen = worker.result(job)
    assert seen.returncode == 0 and seen.output == "from-the-controller\n" and seen.repo == tmp_path / "probe"
    assert seen.env == controller.result(job).env
    controller.stop()


def test_a_worker_is_told_when_the_controller_could_not_prepare_the_run(tmp_path: Path):
    def broken(folder: Path) -> Job:
        raise FileNotFoundError("no such clone")

    published = tmp_path / "lanes"
    controller = Lane(lambda name: tmp_path, publish=published)
    controller.start(Background("broken", broken))
    with pytest.raises(RuntimeError, match="(?s)could not start.*no such clone"):
        SharedLane(published, timeout_s=30, poll_s=0.05).result(Background("broken", broken))
    controller.stop()


def test_a_worker_waiting_for_a_run_nobody_started_fails_naming_it(tmp_path: Path):
    with pytest.raises(RuntimeError, match="no outcome of the background run 'lost'"):
        SharedLane(tmp_path, timeout_s=0.2, poll_s=0.05).result(shell("lost", "true"))
