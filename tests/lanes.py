"""A background lane for the long e2e runs: the README's `make run` and the text-classification `dvc repro`.

In one process (`pytest` alone), a lane's runs start when the session's collection ends and their tests
run last, so the runs overlap everything else, which mostly waits on services and subprocesses. Under
pytest-xdist (`make test`: two workers, whole files, collection order kept), their tests run first
instead: each long run takes one worker from the start while the other worker goes on with the rest,
and the run starts when its fixture first asks (an xdist worker never starts runs at collection: each
worker would). The lane runs its jobs one at a time; `stop()` at session end kills what still runs and
runs each job's teardown.

A test module opts in with a module-level `BACKGROUND = Background(name, prepare)`; its fixture calls
`lane.result(BACKGROUND)`, which waits for the run (starting it if it has not started).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
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
    def __init__(self, make_folder: Callable[[str], Path]):
        self._make_folder = make_folder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-lane")
        self._futures: dict[str, Future] = {}
        self._jobs: list[Job] = []
        self._running: subprocess.Popen | None = None
        self._stopped = threading.Event()

    def start(self, background: Background) -> None:
        if background.name not in self._futures:
            self._futures[background.name] = self._executor.submit(self._run, background)

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


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def background_of(item) -> Background | None:
    module = getattr(item, "module", None)
    return getattr(module, "BACKGROUND", None)
