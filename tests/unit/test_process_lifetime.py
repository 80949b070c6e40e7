"""No stage process outlives its flow: flows/orchestration/supervise.py and run_logged, on real process trees.

Each test starts a small tree of `sleep`s (one in a session of its own, as torchrun starts its
workers; some ignoring SIGTERM) tagged with a unique environment variable, then finds its live
members through /proc. Linux only (prctl, /proc); each test takes one to six seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows.orchestration import steps
from flows.orchestration.supervise import GRACE_S, TIMED_OUT, exit_code, living_descendants, parse
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux prctl and /proc")

SUPERVISE = str(ROOT / "flows" / "orchestration" / "supervise.py")
# A killed flow leaves no process after this long: the supervisor's grace (SIGTERM -> SIGKILL, and these
# sleeps ignore SIGTERM) plus the 10 s flows/orchestration/steps.py also allows.
DEADLINE_S = GRACE_S + 10
# sh, a subshell with its own sleep, a sleep in a new session, a plain sleep; all ignore SIGTERM
# (an ignored signal stays ignored across fork and exec), so stopping them needs the SIGKILL step.
TREE = "setsid sleep 300 & sleep 300 & (sleep 300 & wait) & echo started; wait"
STUBBORN_TREE = f"trap '' TERM; {TREE}"


def tree_env(marker: str) -> dict[str, str]:
    return {**os.environ, "FLOWTUNE_TREE_MARKER": marker, "PYTHONPATH": str(ROOT)}


def tree_pids(marker: str) -> set[int]:
    """Live (not zombie) processes whose environment carries `marker`."""
    needle = f"FLOWTUNE_TREE_MARKER={marker}".encode()
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "environ").read_bytes() and " Z " not in (entry / "stat").read_text():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(condition, timeout_s: float) -> float:
    """Seconds until `condition()` held; fails the test after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"still not true after {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - start


def kill_everything(marker: str) -> None:
    """Cleanup after a failed assertion: no test leaves its sleeps behind."""
    for pid in tree_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture()
def marker():
    value = uuid.uuid4().hex
    yield value
    kill_everything(value)


def test_the_command_exit_code_and_output_pass_through(tmp_path):
    result = subprocess.run([sys.executable, "-I", "-S", SUPERVISE, "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_a_signal_that_ended_the_command_is_reported_like_a_shell():
    assert exit_code(-signal.SIGKILL) == 137 and exit_code(0) == 0 and exit_code(2) == 2


def test_malformed_command_lines_name_the_usage():
    for argv in ([], ["sleep"], ["--"], ["--parent", "--", "x"], ["--bogus", "1", "--", "x"]):
        with pytest.raises(SystemExit, match="usage: supervise.py"):
            parse(argv)
    assert parse(["--parent", "7", "--grace", "1.5", "--", "a", "--", "b"]) == (["a", "--", "b"], 7, 1.5, None)
    assert parse(["--timeout", "3600", "--", "a"])[3] == 3600.0
    for bad in ("0", "-5", "nan"):
        with pytest.raises(SystemExit, match="--timeout must be above 0 seconds"):
            parse(["--timeout", bad, "--", "a"])


def test_a_command_over_its_time_limit_is_stopped_with_its_whole_tree(marker):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-I", "-S", SUPERVISE, "--timeout", "1", "--grace", "1", "--",
                             "sh", "-c", STUBBORN_TREE], env=tree_env(marker), capture_output=True, text=True,
                            timeout=DEADLINE_S + 5)
    took = time.monotonic() - started
    assert result.returncode == TIMED_OUT, result.stderr
    assert "supervise: 'sh' ran over its 1 s limit; stopping it" in result.stderr
    assert not tree_pids(marker)
    assert took < 1 + 1 + 5  # the limit, the grace before SIGKILL, the interpreter's start on a loaded machine


def test_a_command_within_its_time_limit_keeps_its_own_exit_code():
    result = subprocess.run([sys.executable, "-I", "-S", SUPERVISE, "--timeout", "30", "--", "sh", "-c", "exit 3"],
                            timeout=30)
    assert result.returncode == 3


def test_a_killed_parent_leaves_no_process_of_the_tree(marker, tmp_path):
    log = tmp_path / "tree.log"
    # The parent starts the supervisor from a worker thread that then waits, as Prefect may run a task.
    parent_code = (
        "import os, subprocess, sys, threading, time\n"
        "def spawn():\n"
        f"    subprocess.Popen([sys.executable, '-I', '-S', {SUPERVISE!r}, '--parent', str(os.getpid()),\n"
        f"                      '--grace', '1', '--', 'sh', '-c', {STUBBORN_TREE!r}],\n"
        f"                     stdout=open({str(log)!r}, 'w'), start_new_session=True).wait()\n"
        "threading.Thread(target=spawn).start()\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=tree_env(marker))
    try:
        # parent + supervisor + sh + subshell + 3 sleeps
        wait_until(lambda: "started" in log.read_text() if log.exists() else False, 20)
        wait_until(lambda: len(tree_pids(marker)) >= 7, 10)
        parent.kill()
        parent.wait()
        took = wait_until(lambda: not tree_pids(marker), DEADLINE_S)
    finally:
        parent.kill()
    assert took < DEADLINE_S


def test_sigterm_stops_the_tree_including_sessions_of_its_own_and_processes_ignoring_sigterm(marker):
    supervisor = subprocess.Popen([sys.executable, "-I", "-S", SUPERVISE, "--grace", "1", "--",
                                   "sh", "-c", STUBBORN_TREE], env=tree_env(marker), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    assert supervisor.stdout.readline() == "started\n"
    wait_until(lambda: len(tree_pids(marker)) >= 6, 10)
    supervisor.terminate()
    output = supervisor.communicate(timeout=DEADLINE_S)[0]
    assert supervisor.returncode == 128 + signal.SIGKILL  # sh ignored SIGTERM: the escalation ended it
    assert "ignored SIGTERM for 1 s; sending SIGKILL" in output
    assert not tree_pids(marker)


def test_leftovers_of_a_command_that_exited_are_stopped(marker):
    # The sleep keeps the output pipe open: without the cleanup, reading to EOF (run_logged) would hang.
    result = subprocess.run([sys.executable, "-I", "-S", SUPERVISE, "--", "sh", "-c", "setsid sleep 300 & echo bye"],
                            env=tree_env(marker), capture_output=True, text=True, timeout=DEADLINE_S)
    assert (result.returncode, result.stdout) == (0, "bye\n")
    assert not tree_pids(marker)


def test_nothing_starts_when_the_parent_is_already_gone(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    witness = tmp_path / "ran"
    result = subprocess.run([sys.executable, "-I", "-S", SUPERVISE, "--parent", str(dead.pid), "--",
                             "touch", str(witness)], timeout=30)
    assert result.returncode == 128 + signal.SIGTERM and not witness.exists()


def test_living_descendants_skips_zombies():
    child = subprocess.Popen(["true"])
    wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z", 10)
    assert child.pid not in living_descendants(os.getpid())
    child.wait()


RUN_LOGGED = (
    "import logging, sys\n"
    "from flows.orchestration import steps\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s', force=True)\n"
    "steps.get_run_logger = lambda: logging.getLogger('stage')  # outside a Prefect run\n"
    "steps.run_logged(sys.argv[1:], 'the tree')\n"
)


def as_in_a_terminal() -> None:
    """SIGINT handled as in a terminal. A test session started as a background job of a script (`cmd &`)
    ignores SIGINT, and its children inherit that: ctrl-C would then never reach the flow."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_the_flow_stops_the_stage_tree(marker):
    flow = subprocess.Popen([sys.executable, "-c", RUN_LOGGED, "sh", "-c", TREE], env=tree_env(marker),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    guard = threading.Timer(60, flow.kill)  # a readline below never waits for the 300 s sleeps
    guard.start()
    try:
        assert flow.stdout.readline().startswith("$ sh -c")
        assert flow.stdout.readline() == "started\n"
        wait_until(lambda: len(tree_pids(marker)) >= 7, 10)
        flow.send_signal(signal.SIGINT)  # the supervisor has a session of its own: only the flow sees it
        stderr = flow.communicate(timeout=DEADLINE_S)[1]
    finally:
        guard.cancel()
        flow.kill()
    assert "KeyboardInterrupt" in stderr
    assert not tree_pids(marker)


def test_run_logged_streams_the_output_and_names_a_failure(monkeypatch):
    lines: list[str] = []

    class Collect(logging.Logger):
        def info(self, message, *args, **_kwargs):
            lines.append(message % args if args else message)

    monkeypatch.setattr(steps, "get_run_logger", lambda: Collect("stage"))
    steps.run_logged(["sh", "-c", "echo one; echo two >&2"], "two lines")
    assert lines == ["$ sh -c echo one; echo two >&2", "one", "two"]
    with pytest.raises(steps.StageError, match=r"(?s)failing stage' failed \(exit 4\):\nwhy"):
        steps.run_logged(["sh", "-c", "echo why; exit 4"], "'failing stage'")


def test_run_logged_names_the_limit_a_stage_ran_over_and_leaves_no_process(marker, monkeypatch):
    monkeypatch.setenv("FLOWTUNE_TREE_MARKER", marker)  # run_logged passes this process's environment on
    with pytest.raises(steps.StageTimedOut) as timed_out:
        steps.run_logged(["sh", "-c", TREE], "stage 'train'", timeout_s=1, limit_from="timeouts.train in params.yaml")
    assert str(timed_out.value) == ("stage 'train' ran over its 1 s limit (timeouts.train in params.yaml); "
                                    "its processes were stopped")
    assert isinstance(timed_out.value, steps.StageError)  # the flow treats it as any failed stage
    assert not tree_pids(marker)


def test_a_flow_over_its_limit_stops_the_stage_it_was_running(marker, monkeypatch, reliability):
    """The flow's limit (its stages' limits plus flow_margin) interrupts a stage that has none of its own."""
    from flows.orchestration.pipeline import FlowTimedOut, time_limited
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    limits = params.timeouts.model_copy(update={"ingest": 1.0, "flow_margin": 1.0})
    params = params.model_copy(update={"timeouts": limits})
    monkeypatch.setenv("FLOWTUNE_TREE_MARKER", marker)
    started = time.monotonic()
    with pytest.raises(FlowTimedOut, match=r"^flow x ran over its 2 s limit \(its stages' timeouts plus "
                                           r"timeouts\.flow_margin in params\.yaml\); the step it was running was "
                                           r"stopped$"):
        with time_limited("flow x", params, ("ingest",)):
            steps.run_logged(["sh", "-c", TREE], "stage 'ingest'")
    took = time.monotonic() - started
    assert took < 2 + DEADLINE_S
    assert not tree_pids(marker)
    reliability(fault="a flow runs past its limit (its stages' timeouts plus timeouts.flow_margin; 2 s here) "
                      "inside a stage that has no limit of its own",
                happened="the flow failed with FlowTimedOut naming the limit; run_logged stopped the stage's "
                         "process tree on the way out",
                recovered=True, lost="nothing (no process left)", seconds_to_fail=round(took, 2))


def test_flow_limits_add_up_the_stages_they_run():
    from tasks.params import load_params

    for name in ("params.yaml", "params-sentiment.yaml"):
        limits = load_params(ROOT / name).timeouts
        assert limits.flow_limit(("validate", "train")) == limits.of("validate") + limits.train + limits.flow_margin
        assert limits.flow_limit(("train",), train_s=60) == 60 + limits.flow_margin  # trained elsewhere
        assert limits.model_copy(update={"train": None}).flow_limit(("train",)) is None
        assert all(limits.of(stage) for stage in steps.STAGES)  # every stage of the DAG has a limit by default


def test_a_limit_of_zero_or_a_missing_stage_is_refused_with_its_key():
    import yaml

    from tasks.params import ParamsError, parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ParamsError, match=r"timeouts\.train: Input should be greater than 0"):
        parse_params({**raw, "timeouts": {**raw["timeouts"], "train": 0}}, "params.yaml")
    without_augment = {key: value for key, value in raw["timeouts"].items() if key != "augment"}
    with pytest.raises(ParamsError, match=r"timeouts\.augment: Field required"):
        parse_params({**raw, "timeouts": without_augment}, "params.yaml")
    assert parse_params({**raw, "timeouts": {**raw["timeouts"], "train": None}}, "x").timeouts.train is None


def test_a_worker_polls_while_online_with_a_recent_heartbeat():
    import datetime

    from prefect.client.schemas.objects import Worker, WorkerStatus

    from flows.orchestration.remote_train import polling_workers

    now = datetime.datetime(2026, 12, 1, 3, 0, tzinfo=datetime.UTC)

    def worker(name: str, status: WorkerStatus, beat_s_ago: float | None, interval: int | None = 10) -> Worker:
        beat = None if beat_s_ago is None else now - datetime.timedelta(seconds=beat_s_ago)
        return Worker(name=name, work_pool_id=uuid.uuid4(), status=status, last_heartbeat_time=beat,
                      heartbeat_interval_seconds=interval)

    workers = [worker("fresh", WorkerStatus.ONLINE, 25), worker("missed-three", WorkerStatus.ONLINE, 31),
               worker("offline", WorkerStatus.OFFLINE, 1), worker("never", WorkerStatus.ONLINE, None),
               worker("default-interval", WorkerStatus.ONLINE, 89, interval=None)]
    assert polling_workers(workers, now) == ["fresh", "default-interval"]
