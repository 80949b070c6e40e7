"""The Prefect tasks every flowtune flow is made of: storage check, `dvc pull`/`dvc push`, one task per
DVC stage (`dvc repro --single-item <stage>`, with its report published as artifacts).

DVC is the build system: it alone decides what is stale, so dvc.lock stays true whichever flow ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows import reports
from flows.services import ACCELERATOR_LIMIT
from flows.storage import check_storage
from tasks.params import Params
from tasks.settings import Settings

DATA_STAGES = ("ingest", "validate", "clean", "validate_clean", "augment", "validate_augmented")
STAGES = (*DATA_STAGES, "train", "evaluate")


class StageError(RuntimeError):
    """A DVC stage failed; the message carries the stage name and the end of its output."""


def venv_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH: `dvc` and the stages' `python -m tasks.<step>`
    then run in the same environment as the flow, even when the venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def run_logged(command: list[str], what: str) -> None:
    """Run a command in the repo, streaming each output line into the Prefect task log."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(command))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=venv_env())
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        logger.info(line.rstrip())
        tail = (tail + [line.rstrip()])[-30:]
    if process.wait() != 0:
        output = "\n".join(tail)
        raise StageError(f"{what} failed (exit {process.returncode}):\n{output}")


@task(name="check-storage", task_run_name="check-storage", cache_policy=NO_CACHE)
def check_storage_task(settings: Settings) -> None:
    check_storage(settings)


@task(name="dvc-pull", task_run_name="dvc-pull", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def dvc_pull() -> None:
    # --allow-missing: on a fresh remote nothing is there yet; the stages then rebuild it.
    run_logged(["dvc", "pull", "--allow-missing"], "dvc pull")


@task(name="dvc-push", task_run_name="dvc-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def dvc_push() -> None:
    run_logged(["dvc", "push"], "dvc push")


@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, params: Params, settings: Settings) -> dict:
    """Reproduce one DVC stage (DVC skips it when nothing changed) and publish its report.

    A failed data contract still publishes its report and Data Docs (written before the stage
    failed), so the flow run shows which expectations failed and on which records.
    """
    started = time.time()
    run_id = str(flow_run.get_id() or "local")
    try:
        with holding_accelerator(stage):
            run_logged(["dvc", "repro", "--single-item", stage], f"stage {stage!r}")
    except StageError:
        if stage in reports.CONTRACT_STAGES:
            publish_failed_contract(stage, params, settings, run_id, started)
        raise
    return reports.publish(stage, params, settings, run_id)


def holding_accelerator(stage: str):
    """A slot of the global `gpu` limit for the train stage (waits for a free one); nothing for other stages.

    `flowtune services up` creates the limit with one slot per GPU, so two runs never train on one
    accelerator at once. Without the limit on the server (a test harness, a server set up by hand)
    Prefect logs a warning and the stage runs unthrottled.
    """
    from contextlib import nullcontext

    from prefect.concurrency.sync import concurrency

    return concurrency(ACCELERATOR_LIMIT, occupy=1) if stage == "train" else nullcontext()


def publish_failed_contract(stage: str, params: Params, settings: Settings, run_id: str, started: float) -> None:
    """Publish the report a failing contract wrote in this run (never a stale one from an earlier run)."""
    from tasks.validate import checkpoint_paths

    report = Path(checkpoint_paths(params, reports.CONTRACT_STAGES[stage])[1])
    if not report.exists() or report.stat().st_mtime < started:
        return
    try:
        reports.publish(stage, params, settings, run_id)
    except Exception as exc:  # the contract failure is the error to show, not a reporting hiccup
        get_run_logger().warning("could not publish the failed contract's report: %s", exc)


def run_settings() -> Settings:
    """Settings read in the checkout the run starts from, with an absolute state dir (the run may move
    to an isolated workspace, and its services' state stays where it is)."""
    settings = Settings()
    return settings.model_copy(update={"state_dir": settings.state_dir.resolve()})
