"""A background lane for the long e2e runs: the README's `make run` and the text-classification `dvc repro`.

The lane starts the runs as soon as the session knows which tests it will run, one job at a time, and the tests
of those runs go last, so the runs overlap everything else. In one process (`pytest` alone) the lane lives in
the test process. Under pytest-xdist (`make test`) it lives in the controller, which runs no test of its own:
no worker is held waiting for a run while there are other tests to run, and each job runs once, not once per
worker. The controller writes each job's outcome to `<basetemp>/lanes/<name>.json`; a worker's `result()` waits
for that file (`SharedLane`). `stop()` at session end kills what still runs and runs each job's teardown.

A test module opts in with a module-level `BACKGROUND = Background(name, prepare)`; its fixture calls
`lane.result(BACKGROUND)`, which waits for the run (starting it, in one process, if it has not started).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """What `prepare` returns: a command to run in `repo`, and how to clean up after it."""

    repo: Path
    command: list[str]
    env: dict[str, str]
    timeout_s: float
    teardown: list[str] = field(default_factory=list)  # run in `repo` at the end, e.g. stopping services


@dataclass(frozen=True)
class Background:
    name: str  # also the log file's name in the job's repo: <name>.log
    prepare: Callable[[Path], Job]  # gets an empty folder of its own


@dataclass(frozen=True)
class Finished:
    repo: Path
    env: dict[str, str]
    returncode: int
    output: str


class Lane:
    def __init__(self, make_folder: Callable[[str], Path], publish: Path | None = None):
        self._make_folder = make_folder
        self._publish = publish  # where a finished job's outcome is written for other processes (SharedLane)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-lane")
        self._futures: dict[str, Future] = {}
        self._jobs: list[Job] = []
        self._running: subprocess.Popen | None = None
        self._stopped = threading.Event()

    def start(self, background: Background) -> None:
        if background.name not in self._futures:
            self._futures[background.name] = self._executor.submit(self._run_and_publish, background)

    def _run_and_publish(self, background: Background) -> Finished:
        try:
            finished = self._run(background)
        except BaseException:
            self._write(background.name, {"error": traceback.format_exc()})
            raise
        self._write(background.name, {"repo": str(finished.repo), "env": finished.env,
                                      "returncode": finished.returncode})
        return finished

    def _write(self, name: str, outcome: dict) -> None:
        if self._publish is None:
            return
        self._publish.mkdir(parents=True, exist_ok=True)
        temporary = self._publish / f".{name}.json"
        temporary.write_text(json.dumps(outcome))
        temporary.replace(self._publish / f"{name}.json")  # whole or absent: a reader never sees half of it

    def result(self, background: Background) -> Finished:
        self.start(background)
        return self._futures[background.name].result()

    def _run(self, background: Background) -> Finished:
        if self._stopped.is_set():
            raise RuntimeError(f"the test session ended before {background.name} started")
        job = background.prepare(self._make_folder(background.name))
        self._jobs.append(job)
        log = job.repo / f"{background.name}.log"
        with log.open("w") as out:
            # A session of its own, so that stopping the lane stops the command's whole tree.
            self._running = subprocess.Popen(job.command, cwd=job.repo, env=job.env, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = self._running.wait(timeout=job.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(self._running)
                out.write(f"\n[lane] {background.name} killed after its {job.timeout_s:.0f} s timeout\n")
                returncode = -signal.SIGKILL
        return Finished(job.repo, job.env, returncode, log.read_text())

    def stop(self) -> None:
        """End of session: cancel what has not started, kill what runs, run every job's teardown."""
        self._stopped.set()
        for future in self._futures.values():
            future.cancel()
        if self._running is not None and self._running.poll() is None:
            _kill_group(self._running)
        self._executor.shutdown(wait=True)
        for job in self._jobs:
            if job.teardown:
                subprocess.run(job.teardown, cwd=job.repo, env=job.env, capture_output=True, timeout=300)


class SharedLane:
    """A worker's view of the controller's lane: `result()` waits for the job's outcome file."""

    def __init__(self, folder: Path, timeout_s: float = 5400, poll_s: float = 2.0):
        self.folder, self.timeout_s, self.poll_s = folder, timeout_s, poll_s

    def start(self, background: Background) -> None:
        """The controller started every selected job already."""

    def result(self, background: Background) -> Finished:
        path = self.folder / f"{background.name}.json"
        deadline = time.monotonic() + self.timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no outcome of the background run {background.name!r} in {self.folder} after "
                                   f"{self.timeout_s:.0f} s: the controller did not start it, or it still runs")
            time.sleep(self.poll_s)
        outcome = json.loads(path.read_text())
        if "error" in outcome:
            raise RuntimeError(f"the background run {background.name!r} could not start:\n{outcome['error']}")
        repo = Path(outcome["repo"])
        return Finished(repo, outcome["env"], outcome["returncode"], (repo / f"{background.name}.log").read_text())

    def stop(self) -> None:
        """The controller stops the runs."""


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def background_of(item) -> Background | None:
    module = getattr(item, "module", None)
    return getattr(module, "BACKGROUND", None)


def background_of_file(path: Path) -> Background | None:
    """The `BACKGROUND` of a test file, for the xdist controller, which collects nothing itself: only a file that
    declares one is imported (under a name of its own, apart from the workers' copies)."""
    if path.suffix != ".py" or not any(line.startswith("BACKGROUND = ") for line in path.read_text().splitlines()):
        return None
    spec = importlib.util.spec_from_file_location(f"lane_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "BACKGROUND", None)
