"""A background lane for the long e2e runs: they start when the test session starts, their tests run last.

Why: the README's `make run` takes about 20 minutes on two cores (training is 87% of it) and the
text-classification `dvc repro` about 8, while the rest of the suite is mostly waiting on services and
subprocesses. Run one after the other, the suite took 66 minutes; overlapped, the long runs hide behind
the rest. The lane runs its jobs one at a time: two trainings at once on two cores slow each other down
more than they gain. (pytest-xdist was tried first: with both workers running CPU-bound tests, the e2e
training took 45 minutes instead of 17.)

A test module opts in with a module-level `BACKGROUND = Background(name, prepare)`; its fixture calls
`lane.result(BACKGROUND)`, which waits for the run (or starts it then, under pytest-xdist or when the
session did not select the module at collection time).
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
