"""The Prefect tasks every flowtune flow is made of: storage check, `dvc pull`/`dvc push`, one task per
DVC stage (`dvc repro --single-item <stage>`, with its report published as artifacts).

DVC is the build system: it alone decides what is stale, so dvc.lock stays true whichever flow ran.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from flows.names import ACCELERATOR_LIMIT
from flows.ops.storage import check_storage
from flows.orchestration import reports
from flows.orchestration.supervise import GRACE_S, TIMED_OUT
from tasks.params import Params
from tasks.settings import Settings

DATA_STAGES = ("ingest", "validate", "clean", "validate_clean", "augment", "validate_augmented")
STAGES = (*DATA_STAGES, "train", "evaluate", "teacher_logits", "distill", "compress")
TRAINING_STAGES = ("train", "distill")  # the stages that hold a `gpu` slot (holding_accelerator)
# The `gpu` slot's lease (Prefect 3.8 default: 300 s). A live run renews it every 0.75 x 60 = 45 s
# from a background thread; when the flow dies, the server's repossessor (every 15 s) frees the slot
# 60-75 s after the last renewal, so 15-75 s after the death (measured: 42 s) instead of up to 5.25 min.
# 60 s is the server's minimum (the API rejects less), and it leaves 15 s for the renewal's own
# retries (3 tries, 1-10 s apart). tests/integration/test_process_lifetime.py checks the renewal,
# tests/faults/test_killed_mid_train.py the release after a SIGKILL (measured there: 52-62 s).
ACCELERATOR_LEASE_S = 60


class StageError(RuntimeError):
    """A DVC stage failed; the message carries the stage name and the end of its output."""


class StageTimedOut(StageError):
    """A command ran over its time limit; the supervisor stopped its whole process tree."""


def venv_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, and this interpreter for the stages (infra/local/python):
    `dvc` and every `python -m tasks.<step>` then run in the flow's environment, even in a workspace that
    has no .venv of its own."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "FLOWTUNE_PYTHON": sys.executable}


def run_logged(command: list[str], what: str, timeout_s: float | None = None, limit_from: str = "") -> None:
    """Run a command in the repo, streaming each output line into the Prefect task log.

    The command runs under `flows/orchestration/supervise.py`, so none of its processes outlives this one: if this
    process dies (SIGKILL, OOM) the supervisor stops the command's whole tree within seconds, and
    when this thread is interrupted (ctrl-C, a cancelled run's SIGTERM) it is stopped here. After
    `timeout_s` seconds (None: no limit) the supervisor stops it and StageTimedOut names `what`, the
    limit and `limit_from` (where the limit is set).
    """
    logger = run_logger()
    logger.info("$ %s", " ".join(command))
    # The thread that starts the supervisor must be the one that waits for it: the kernel sends the
    # parent-death signal when the *thread* that forked exits, and Prefect may run tasks in worker
    # threads. Its own session keeps the supervisor alive when the flow's process group is killed
    # (Prefect's runner cancels with killpg), so it can still stop the stage. The except below runs
    # only in the thread that gets the KeyboardInterrupt or Prefect's TerminationSignal, the main one,
    # where flowtune's flows call their tasks; a submitted task's stage stops when the process dies
    # (the runner SIGKILLs 30 s after its SIGTERM).
    process = subprocess.Popen(supervised(command, timeout_s), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=venv_env(), start_new_session=True)
    try:
        tail = stream_output(process, logger)
        returncode = process.wait()
    except BaseException:  # KeyboardInterrupt, Prefect's TerminationSignal, a logging error: stop the stage
        stop_supervised(process)
        raise
    if returncode == TIMED_OUT and timeout_s is not None:
        where = f" ({limit_from})" if limit_from else ""
        raise StageTimedOut(f"{what} ran over its {timeout_s:g} s limit{where}; its processes were stopped")
    if returncode != 0:
        output = "\n".join(tail)
        raise StageError(f"{what} failed (exit {returncode}):\n{output}")


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a flow or task run; outside one (a script, a test), flowtune's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flowtune")


def supervised(command: list[str], timeout_s: float | None = None) -> list[str]:
    """`command` wrapped in flows/orchestration/supervise.py, with this process as the parent whose death stops it
    (and `timeout_s` as its time limit, if any).

    Run by path with -I -S (stdlib only, no site-packages, nothing from the cwd on sys.path): it starts
    in milliseconds and works from any folder, a workspace checkout or a scratch DVC repo alike.
    """
    supervisor = Path(__file__).with_name("supervise.py")
    limit = [] if timeout_s is None else ["--timeout", repr(float(timeout_s))]
    return [sys.executable, "-I", "-S", str(supervisor), "--parent", str(os.getpid()), *limit, "--", *command]


def stream_output(process: subprocess.Popen, logger) -> list[str]:
    """Log each line of `process`'s output as it comes; the last 30 lines (for the error message)."""
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        logger.info(line.rstrip())
        tail = (tail + [line.rstrip()])[-30:]
    return tail


def stop_supervised(process: subprocess.Popen) -> None:
    """SIGTERM the supervisor (it stops the command's tree, SIGKILL after its grace) and wait for it."""
    process.terminate()
    try:
        process.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:  # a stuck supervisor: never leave this call with it alive
        process.kill()
        process.wait()


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


@task(name="dvc-status", task_run_name="dvc-status", cache_policy=NO_CACHE)
def stale_stages(stages: tuple[str, ...]) -> tuple[str, ...]:
    """The tail of `stages` (in pipeline order) that must go through `dvc repro`: from the first stage DVC
    reports changed (`dvc status`: code, params and data hashes) to the end. The stages before it, and all
    their upstream stages, are unchanged: `dvc repro` would do nothing there but cost an interpreter each.

    One status query for the whole pipeline: a nightly run where nothing changed then costs seconds, and a
    run that only retrains skips the data stages. It runs in this process through DVC's Python API (what
    `dvc status` calls): no second interpreter importing DVC. DVC still decides; anything it reports (a
    changed dependency, a missing output, an error) sends the stages from there through `dvc repro` as usual.
    """
    try:
        changed = changed_stages()
    except Exception as exc:  # noqa: BLE001 - whatever DVC fails on, `dvc repro` reports it properly
        get_run_logger().info("dvc status failed (%s): every stage goes through dvc repro", exc)
        return stages
    stale = from_first_changed(stages, changed)
    get_run_logger().info("dvc status: %s", status_line(stages, stale))
    return stale


def status_line(stages: tuple[str, ...], stale: tuple[str, ...]) -> str:
    """What the run will reproduce, in words, for its log."""
    if not stale:
        return "every stage up to date"
    if stale == stages:
        return f"{stale[0]} changed: every stage goes through dvc repro"
    return f"up to date until {stale[0]}: {', '.join(stale)} go through dvc repro"


def changed_stages() -> set[str]:
    """Names of the stages `dvc status` reports changed in this checkout (one parse of dvc.yaml for all)."""
    from dvc.repo import Repo

    with Repo() as repo:
        return {name.rsplit(":", 1)[-1] for name in repo.status()}  # "sub/dvc.yaml:train" -> "train"


def from_first_changed(stages: tuple[str, ...], changed: set[str]) -> tuple[str, ...]:
    """`stages` from the first one in `changed` to the end (pipeline order: what follows a changed stage may
    change with it); () when none changed."""
    first = next((i for i, stage in enumerate(stages) if stage in changed), len(stages))
    return stages[first:]


@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def repro_stage(stage: str, params: Params, settings: Settings, up_to_date: bool = False) -> dict:
    """Reproduce one DVC stage (DVC skips it when nothing changed) and publish its report.

    `up_to_date` (not in `stale_stages`) skips the `dvc repro` call, which would do nothing.
    A failed data contract still publishes its report and Data Docs (written before the stage
    failed), so the flow run shows which expectations failed and on which records.
    """
    started = time.time()
    run_id = str(flow_run.get_id() or "local")
    if up_to_date:
        get_run_logger().info("stage %r is up to date (dvc status): nothing to reproduce", stage)
        return reports.publish(stage, params, settings, run_id)
    try:
        with holding_accelerator(stage):
            # The limit counts from the stage's start: a wait for the `gpu` slot above is not the stage's.
            run_logged(["dvc", "repro", "--single-item", stage], f"stage {stage!r}",
                       timeout_s=params.timeouts.of(stage), limit_from=f"timeouts.{stage} in params.yaml")
    except StageError:
        if stage in reports.CONTRACT_STAGES:
            publish_failed_contract(stage, params, settings, run_id, started)
        raise
    return reports.publish(stage, params, settings, run_id)


def holding_accelerator(stage: str):
    """A slot of the global `gpu` limit for the training stages (waits for a free one); nothing for other stages.

    `flowtune services up` creates the limit with one slot per GPU, so two runs never train on one
    accelerator at once. Without the limit on the server (a test harness, a server set up by hand)
    Prefect logs a warning and the stage runs unthrottled.

    The slot is a lease the holder renews; if the flow process dies, the slot comes free when the
    lease expires (and the stage dies with the flow, see run_logged, so nothing still trains on it).
    """
    from contextlib import nullcontext

    from prefect.concurrency.sync import concurrency

    if stage not in TRAINING_STAGES:
        return nullcontext()
    return concurrency(ACCELERATOR_LIMIT, occupy=1, lease_duration=ACCELERATOR_LEASE_S)


def publish_failed_contract(stage: str, params: Params, settings: Settings, run_id: str, started: float) -> None:
    """Publish the report a failing contract wrote in this run (never a stale one from an earlier run)."""
    report = Path(params.paths.checkpoint(reports.CONTRACT_STAGES[stage])[1])
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
