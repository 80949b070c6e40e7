"""The NER pipeline as one Prefect flow.

DVC is the build system: each file-producing step runs as `dvc repro --single-item <stage>`, so DVC
alone decides what is stale and dvc.lock stays true. Prefect adds what DVC cannot: the storage check,
`dvc pull`/`dvc push` with retries, one task and one artifact per step, the gate and registration.

Three flows share these tasks: `ner_pipeline` (everything), `data_refresh` (import to augmented data,
no training) and `evaluate_champion` (the registered champion against the current test data). Each
works in place (a hand-started run, like `dvc repro`) or in an isolated checkout (deployed runs,
see flows/workspace.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from flows import reports
from flows.champion import champion_metrics
from flows.gate import Decision, decide
from flows.services import ACCELERATOR_LIMIT
from flows.storage import check_storage
from flows.workspace import DEFAULT_PARAMS, Workspace, run_workspace
from tasks.params import Params, load_params
from tasks.registry import Registry
from tasks.settings import Settings, s3_client

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


@task(name="gate", task_run_name="gate", cache_policy=NO_CACHE)
def gate(params: Params, registry: Registry, settings: Settings) -> Decision:
    candidate = json.loads(Path(params.paths.eval_metrics).read_text())
    champion = champion_metrics(params, registry)  # re-scored on this run's test split
    decision = decide(candidate, champion, params.gate)
    create_markdown_artifact(key="gate-decision", markdown=decision.as_markdown(), description="Evaluation gate")
    save_decision(settings.state_dir / "last_gate.json", decision, champion)
    return decision


def save_decision(path: Path, decision: Decision, champion: dict | None) -> None:
    """The last run's decision, in the git-ignored state folder: it belongs to that flow run, not to the
    DVC pipeline (data/ holds only what `dvc pull` can restore)."""
    from tasks.records import write_json

    champion_summary = None if champion is None else {k: champion.get(k) for k in ("version", "f1", "incomparable")}
    write_json(path, {"promote": decision.promote, "reasons": decision.reasons, "champion": champion_summary})


@task(name="register", task_run_name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def register(params: Params, registry: Registry, decision: Decision, settings: Settings) -> int:
    """Publish the candidate as a new immutable version and point `champion` at it."""
    from flows.lineage import build_lineage, staged_model_dir

    lineage = build_lineage(params, decision, settings)
    with staged_model_dir(params, lineage) as model_dir:
        version = registry.publish(params.registry.model_name, model_dir, lineage)
    registry.set_alias(params.registry.model_name, "champion", version)
    uri = f"s3://{registry.bucket}/{registry.prefix}/{params.registry.model_name}/{version}/"
    create_markdown_artifact(
        key="registered-model",
        markdown=f"# Registered `{params.registry.model_name}` v{version}\n\n- location: `{uri}`\n- alias: `champion`\n"
        f"- strict F1: {lineage['metrics']['f1']:.4f}\n",
        description="Model registry",
    )
    return version


def run_settings() -> Settings:
    """Settings read in the checkout the run starts from, with an absolute state dir (the run may move
    to an isolated workspace, and its services' state stays where it is)."""
    settings = Settings()
    return settings.model_copy(update={"state_dir": settings.state_dir.resolve()})


def reproduce(stages: tuple[str, ...], params: Params, settings: Settings) -> None:
    check_storage_task(settings)
    dvc_pull()
    for stage in stages:
        run_stage(stage, params, settings)


def registry_of(settings: Settings) -> Registry:
    return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


@flow(name="flowtune-ner", log_prints=True)
def ner_pipeline(push: bool = True, workspace: Workspace = "in-place", revision: str = "HEAD",
                 params_file: str = DEFAULT_PARAMS, data_source: str | None = None):
    """Pull, reproduce every stage, gate, register a passing model, push data and artifacts.

    `workspace="in-place"` works in the current checkout and reads ./params.yaml, like `dvc repro`;
    `"isolated"` works in a clean checkout of `revision` where `params_file` (a file of that commit)
    and `data_source` (replacing `ingest.source`) may be chosen.
    """
    settings = run_settings()
    with run_workspace(workspace, str(flow_run.get_id() or "local"), settings, revision=revision,
                       params_file=params_file, data_source=data_source):
        params = load_params(DEFAULT_PARAMS)
        reproduce(STAGES, params, settings)
        registry = registry_of(settings)
        decision = gate(params, registry, settings)
        if push:
            dvc_push()
        if not decision.promote:
            return Failed(message="gate rejected the candidate: " + "; ".join(decision.reasons))
        version = register(params, registry, decision, settings)
    return {"model": params.registry.model_name, "version": version, "flow_run_id": str(flow_run.get_id())}


@flow(name="flowtune-data-refresh", log_prints=True)
def data_refresh(push: bool = True, workspace: Workspace = "in-place", revision: str = "HEAD",
                 params_file: str = DEFAULT_PARAMS, data_source: str | None = None) -> dict:
    """Import, validate, clean and augment (no training), then push the new data to the DVC remote."""
    settings = run_settings()
    with run_workspace(workspace, str(flow_run.get_id() or "local"), settings, revision=revision,
                       params_file=params_file, data_source=data_source):
        params = load_params(DEFAULT_PARAMS)
        reproduce(DATA_STAGES, params, settings)
        if push:
            dvc_push()
        sentences = json.loads(Path(params.paths.augment_report).read_text())["sentences"]
    return {"sentences": sentences}


@task(name="evaluate-champion", task_run_name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion_task(params: Params, registry: Registry, alias: str) -> dict:
    metrics = champion_metrics(params, registry, alias)
    if metrics is None:
        raise ValueError(f"no model behind {params.registry.model_name}:{alias} in the registry")
    if "incomparable" in metrics:
        raise ValueError(f"{params.registry.model_name}:{alias} cannot label this test set: {metrics['incomparable']}")
    create_markdown_artifact(key="champion-evaluation", markdown=reports.champion_markdown(params, alias, metrics),
                             description="Champion on the current test data")
    return metrics


@flow(name="flowtune-evaluate-champion", log_prints=True)
def evaluate_champion(alias: str = "champion", workspace: Workspace = "in-place", revision: str = "HEAD",
                      params_file: str = DEFAULT_PARAMS, data_source: str | None = None) -> dict:
    """Score the registered model behind `alias` on the current test data (rebuilt or pulled by DVC)."""
    settings = run_settings()
    with run_workspace(workspace, str(flow_run.get_id() or "local"), settings, revision=revision,
                       params_file=params_file, data_source=data_source):
        params = load_params(DEFAULT_PARAMS)
        reproduce(DATA_STAGES, params, settings)
        metrics = evaluate_champion_task(params, registry_of(settings), alias)
    return {"model": params.registry.model_name, "version": metrics["version"], "f1": metrics["f1"]}
