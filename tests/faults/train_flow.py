"""What the fault tests that hit a training flow share: a scratch clone whose train stage has its inputs,
a one-task flow running the real train stage in it, that flow's process with its output collected, and
the clone's live stage processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from flows.ops import services
from tasks.io import write_jsonl
from tests.helpers import api_post, clean_env, client_env_file, scratch_clone, set_params, synthetic

FLOW_SCRIPT = '''
"""One flow: the pipeline's train task (dvc repro --single-item train) on this checkout."""
from prefect import flow

from flows.orchestration.steps import run_settings, repro_stage
from tasks.params import load_params


@flow(name="{flow_name}")
def train_only() -> None:
    repro_stage("train", load_params("params.yaml"), run_settings())


if __name__ == "__main__":
    train_only()
'''


def train_clone(folder: Path, tiny_base: Path, settings, flow_name: str, *, sentences: int, epochs: int,
                log_every_steps: int) -> Path:
    """A scratch clone whose train stage has its inputs (augmented data, a passed contract) and trains a
    tiny BERT on one thread, with a checkpoint every 5 steps; `fault_flow.py` in it runs that stage."""
    repo = scratch_clone(folder)
    set_params(repo, task={"labels": ["person", "geo-loc"]},
               train={"base_model": str(tiny_base), "max_length": 16, "epochs": epochs, "batch_size": 4,
                      "num_threads": 1, "log_every_steps": log_every_steps, "checkpoint_every_steps": 5})
    write_jsonl(repo / "data/augmented/train.jsonl", synthetic(sentences, 1))
    write_jsonl(repo / "data/augmented/dev.jsonl", synthetic(16, 2))
    (repo / "data/reports/contract_augmented.json").parent.mkdir(parents=True, exist_ok=True)
    (repo / "data/reports/contract_augmented.json").write_text('{"success": true}\n')
    (repo / "fault_flow.py").write_text(FLOW_SCRIPT.format(flow_name=flow_name))
    (repo / ".env").write_text(client_env_file(settings))
    return repo


class FlowProcess:
    """`python fault_flow.py` in the clone, in a session of its own (so `cleanup` can stop all it started);
    its output lines are collected by a thread as they come."""

    def __init__(self, repo: Path, settings) -> None:
        env = clean_env(PYTHONPATH=str(repo), **services.service_env(settings))
        self.process = subprocess.Popen([str(repo / ".venv/bin/python"), "fault_flow.py"], cwd=repo, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout_s: float) -> None:
        """Until a line contains `marker`; fails if the run ends first or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while not any(marker in line for line in self.lines):
            assert self.process.poll() is None, f"the run ended before {marker!r}:\n" + self.output[-4000:]
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout_s} s:\n" + self.output[-4000:]
            time.sleep(0.2)

    def finish(self, timeout_s: float) -> int | None:
        """The exit status, or None (the whole process group killed) when it runs past `timeout_s`."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.cleanup()
            return None
        finally:
            self.reader.join(timeout=10)

    def cleanup(self) -> None:
        """Kill whatever of the run's process group is left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def flow_runs(settings, flow_name: str) -> list[dict]:
    """The flow's runs on the server, oldest first."""
    query = {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_ASC"}
    return api_post(settings, "flow_runs/filter", json=query).json()


def stage_processes(repo: Path) -> dict[int, str]:
    """pid -> command line of each live process working in the clone (dvc, the supervisor, the trainer)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == repo and " Z " not in (proc / "stat").read_text():
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone, or a zombie (its cwd no longer readable)
            continue
    return found
