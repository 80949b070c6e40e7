"""The flowtune flows.

DVC is the build system: each file-producing step runs as `dvc repro --single-item <stage>` (see
flows/orchestration/steps.py), so DVC alone decides what is stale and dvc.lock stays true. Prefect adds what DVC
cannot: the storage check, `dvc pull`/`dvc push` with retries, one task and one artifact per step, the
gate and registration, schedules (prefect.yaml) and the UI.

Three flows share these tasks: `training_pipeline` (everything), `data_refresh` (import to augmented data,
no training) and `evaluate_champion` (the registered champion against the current test data). Each
works in place (a hand-started run, like `dvc repro`) or in an isolated checkout (deployed runs,
see flows/orchestration/workspace.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.timeout import timeout

from flows.names import DATA_REFRESH_FLOW, EVALUATE_CHAMPION_FLOW, PIPELINE_FLOW
from flows.ops.diskspace import check_free_disk
from flows.orchestration import reports
from flows.orchestration.champion import champion_metrics
from flows.orchestration.gate import Champion, Decision, decide
from flows.orchestration.remote_train import DEFAULT_TRAIN_TIMEOUT_S, train_elsewhere
from flows.orchestration.steps import (
    DATA_STAGES,
    STAGES,
    check_storage_task,
    dvc_pull,
    dvc_push,
    repro_stage,
    run_settings,
    stale_stages,
)
from flows.orchestration.workspace import DEFAULT_PARAMS, Workspace, run_workspace
from flows.registry import AliasConflict, Registry, directory_digest
from tasks.metrics import EvalReport
from tasks.params import Params, load_params
from tasks.settings import Settings, s3_client


@task(name="gate", task_run_name="gate", cache_policy=NO_CACHE)
def gate(params: Params, registry: Registry, settings: Settings) -> Decision:
    candidate = EvalReport.read(Path(params.paths.eval_metrics))
    champion = champion_metrics(params, registry, reuse=True)  # on this run's test split, by this run's code
    decision = decide(candidate, champion, params.gate)
    create_markdown_artifact(key="gate-decision", markdown=decision.as_markdown(), description="Evaluation gate")
    save_decision(settings.state_dir / "last_gate.json", decision, champion)
    return decision


def save_decision(path: Path, decision: Decision, champion: Champion | None) -> None:
    """The last run's decision, in the git-ignored state folder: it belongs to that flow run, not to the
    DVC pipeline (data/ holds only what `dvc pull` can restore)."""
    from tasks.io import write_json

    champion_summary = None
    if champion is not None:
        scored = isinstance(champion.report, EvalReport)
        champion_summary = {"version": champion.version,
                            "f1": champion.report.headline.value if scored else None,
                            "incomparable": None if scored else champion.report.incomparable}
    write_json(path, {"promote": decision.promote, "reasons": decision.reasons, "champion": champion_summary})


class RegistrationRefused(RuntimeError):
    """Registration would record something untrue (e.g. params.yaml changed during the run)."""


def final_error(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry I/O errors, never a conflict or a refusal (retrying cannot fix those)."""
    try:
        state.result()
    except (AliasConflict, RegistrationRefused):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


def params_fingerprint() -> str:
    """sha256 of ./params.yaml: the flow reads it once at start, every `dvc repro` reads it again."""
    return hashlib.sha256(Path(DEFAULT_PARAMS).read_bytes()).hexdigest()


def check_params_unchanged(started_with: str) -> None:
    now = params_fingerprint()
    if now != started_with:
        raise RegistrationRefused(
            f"params.yaml changed during this run (sha256 {started_with[:12]} at start, {now[:12]} now): the model, "
            "metrics, lineage and gate thresholds could describe different params, so nothing was registered. "
            "Re-run once the edit is done.")


@task(name="check-unchanged", task_run_name="check-unchanged", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[5, 20])
def known_version(params: Params, registry: Registry) -> int | None:
    """The registered version that already holds the candidate's weights (same content digest), or None."""
    return registry.find_digest(params.registry.model_name, directory_digest(Path(params.paths.model)))


def report_unchanged(params: Params, registry: Registry, version: int) -> dict:
    """Nothing to register: say so in the log and the registration artifact; the run's result."""
    name = params.registry.model_name
    champion = registry.get_alias(name, "champion")
    if champion == version:
        message = f"unchanged: champion is v{version} (same weights)"
    else:
        message = (f"unchanged: the candidate is v{version} (same weights), which is not champion (champion is "
                   f"{'v' + str(champion) if champion else 'unset'}); nothing was published or moved. "
                   f"`flowtune registry promote {name}@{version}` makes it champion again")
    get_run_logger().info(message)
    create_markdown_artifact(key="registered-model", markdown=f"# `{name}`: {message}\n",
                             description="Model registry: nothing new to register")
    return {"model": name, "version": version, "unchanged": True, "message": message,
            "flow_run_id": str(flow_run.get_id())}


@task(name="publish-version", task_run_name="publish-version", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[5, 20], retry_condition_fn=final_error)
def publish_version(params: Params, registry: Registry, decision: Decision, settings: Settings,
                    started_with: str) -> tuple[int, str]:
    """Publish the candidate (idempotent: a retry of this flow run finishes the same version); (version, card)."""
    from flows.orchestration.lineage import build_lineage, staged_model_dir

    check_params_unchanged(started_with)
    lineage = build_lineage(params, decision, settings)
    with staged_model_dir(params, lineage) as model_dir:
        version = registry.publish(params.registry.model_name, model_dir, lineage, run_id=str(flow_run.get_id()))
        return version, (model_dir / "README.md").read_text(encoding="utf-8")


@task(name="move-champion", task_run_name="move-champion", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[5, 20], retry_condition_fn=final_error)
def move_champion(params: Params, registry: Registry, decision: Decision, version: int) -> None:
    """Point `champion` at `version` only if it still points where the gate looked (compare-and-swap)."""
    registry.set_alias(params.registry.model_name, "champion", version, expected=decision.champion_version)


@task(name="publish-model-card", task_run_name="publish-model-card", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[5, 20])
def publish_card(settings: Settings, name: str, version: int, card: str) -> str:
    return reports.publish_model_card(settings, name, version, card)


def register(params: Params, registry: Registry, decision: Decision, settings: Settings, started_with: str) -> int:
    """Publish the candidate as a version, point `champion` at it, then copy its card to the reports bucket.

    Each step retries on its own, so a failure after the publish never publishes again; the card copy
    is a convenience (the card is inside the version too), so its failure is a warning, not a failed run.
    """
    name = params.registry.model_name
    version, card = publish_version(params, registry, decision, settings, started_with)
    move_champion(params, registry, decision, version)
    try:
        card_link = f"[{name} v{version}]({publish_card(settings, name, version, card)})"
    except Exception as exc:  # noqa: BLE001 - the version and alias are in place; only the copy is missing
        get_run_logger().warning("model card not copied to the reports bucket (%s); it is in the version itself", exc)
        card_link = f"README.md inside v{version} (the reports-bucket copy failed)"
    uri = f"s3://{registry.bucket}/{registry.prefix}/{name}/{version}/"
    score = EvalReport.read(Path(params.paths.eval_metrics)).headline
    create_markdown_artifact(
        key="registered-model",
        markdown=f"# Registered `{name}` v{version}\n\n- location: `{uri}`\n- alias: `champion`\n"
        f"- {score.name}: {score.value:.4f}\n- model card: {card_link}\n\n---\n\n{card}",
        description="Model registry: the new version and its model card",
    )
    return version


def reproduce(stages: tuple[str, ...], params: Params, settings: Settings, train_on: str | None = None,
              train_timeout_s: float = DEFAULT_TRAIN_TIMEOUT_S) -> None:
    """Pull, then one task per stage; with `train_on`, the train stage runs through that deployment
    (cancelled, and the run failed, if it has not finished after `train_timeout_s`)."""
    check_storage_task(settings)
    dvc_pull()
    stale = stale_stages(stages)
    for stage in stages:
        if stage not in stale:
            repro_stage(stage, params, settings, up_to_date=True)
        elif stage == "train" and train_on:
            dvc_push()  # the other machine pulls the train stage's inputs from the remote
            train_elsewhere(train_on, params, settings, train_timeout_s)
        else:
            repro_stage(stage, params, settings)


class FlowTimedOut(TimeoutError):
    """A flow ran over its limit (params `timeouts`); the stage it was running was stopped with it."""


@contextlib.contextmanager
def time_limited(what: str, params: Params, stages: tuple[str, ...], train_s: float | None = None) -> Iterator[None]:
    """Fail the flow once it has run longer than its stages' limits plus `timeouts.flow_margin` (None: no limit).

    The stage limits bound each stage; this bounds the rest (a `dvc pull` or push, a wait for the `gpu`
    slot, the registry). Prefect's own flow `timeout_seconds` is fixed when the module is imported, before
    the run's params file is known; this is the same mechanism (prefect.utilities.timeout: an alarm in
    the main thread) started once the params are read. Interrupted there, run_logged stops its stage.
    """
    limit = params.timeouts.flow_limit(stages, train_s)
    try:
        with timeout(limit, timeout_exc_type=FlowTimedOut):
            yield
    except FlowTimedOut:
        raise FlowTimedOut(f"{what} ran over its {limit:g} s limit (its stages' timeouts plus timeouts.flow_margin "
                           "in params.yaml); the step it was running was stopped") from None


@contextlib.contextmanager
def working_copy(workspace: Workspace, revision: str, params_file: str,
                 data_source: str | None) -> Iterator[tuple[Settings, Params]]:
    """Inside the run's workspace (flows/orchestration/workspace.py): its settings and the params it runs with."""
    settings = run_settings()
    check_free_disk(settings)  # before the workspace: an isolated checkout is the first thing a run writes
    with run_workspace(workspace, str(flow_run.get_id() or "local"), settings, revision=revision,
                       params_file=params_file, data_source=data_source, on_stale_holder=crash_dead_holder):
        yield settings, load_params(DEFAULT_PARAMS)


def crash_dead_holder(holder: dict) -> None:
    """Mark Crashed the flow run that died holding this checkout (kill -9, the OOM killer).

    Such a run stays Running on the server for ever, since no process is left to report its end (a
    worker does this for the runs it starts; nobody does it for `flowtune run`). A failure here is
    only logged: it must not stop the run that found the leftover.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    dead = holder.get("flow_run_id")
    if not dead or dead == "local":
        return
    message = (f"its process (pid {holder.get('pid')}) died while holding the checkout; found by flow run "
               f"{flow_run.get_id()}")
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(dead).state
            if state is not None and not state.is_final():
                client.set_flow_run_state(dead, Crashed(message=message), force=True)
                get_run_logger().warning("flow run %s was %s: marked Crashed (%s)", dead, state.name, message)
    except Exception as exc:  # noqa: BLE001 - bookkeeping of another run; this one goes on
        get_run_logger().warning("could not mark the dead flow run %s Crashed: %s", dead, exc)


def registry_of(settings: Settings) -> Registry:
    return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


@flow(name=PIPELINE_FLOW, log_prints=True)
def training_pipeline(push: bool = True, workspace: Workspace = "in-place", revision: str = "HEAD",
                      params_file: str = DEFAULT_PARAMS, data_source: str | None = None, train_on: str | None = None,
                      train_timeout_s: float = DEFAULT_TRAIN_TIMEOUT_S):
    """Pull, reproduce every stage, gate, register a passing model, push data and artifacts.

    `workspace="in-place"` works in the current checkout and reads ./params.yaml, like `dvc repro`
    (holding the checkout for the whole run); `"isolated"` works in a clean checkout of `revision`
    where `params_file` (a file of that commit) and `data_source` (replacing `ingest.source`) may be
    chosen. `train_on` names a deployment of the `flowtune-train-stage` flow (e.g.
    `flowtune-train-stage/gpu`) that trains on its own work pool; it fails at once if no worker polls
    that pool, and is cancelled after `train_timeout_s` seconds.

    A candidate whose weights a registered version already holds (a run where nothing changed) is
    not gated nor published again: the run completes and says "unchanged".
    """
    with working_copy(workspace, revision, params_file, data_source) as (settings, params), \
            time_limited(f"flow {PIPELINE_FLOW}", params, STAGES, train_timeout_s if train_on else None):
        started_with = params_fingerprint()
        reproduce(STAGES, params, settings, train_on, train_timeout_s)
        registry = registry_of(settings)
        known = known_version(params, registry)
        decision = None if known is not None else gate(params, registry, settings)
        if push:
            dvc_push()
        if known is not None:
            return report_unchanged(params, registry, known)
        if not decision.promote:
            return Failed(message="gate rejected the candidate: " + "; ".join(decision.reasons))
        version = register(params, registry, decision, settings, started_with)
    return {"model": params.registry.model_name, "version": version, "flow_run_id": str(flow_run.get_id())}


@flow(name=DATA_REFRESH_FLOW, log_prints=True)
def data_refresh(push: bool = True, workspace: Workspace = "in-place", revision: str = "HEAD",
                      params_file: str = DEFAULT_PARAMS, data_source: str | None = None) -> dict:
    """Import, validate, clean and augment (no training), then push the new data to the DVC remote."""
    with working_copy(workspace, revision, params_file, data_source) as (settings, params), \
            time_limited(f"flow {DATA_REFRESH_FLOW}", params, DATA_STAGES):
        reproduce(DATA_STAGES, params, settings)
        if push:
            dvc_push()
        sentences = json.loads(Path(params.paths.augment_report).read_text())["sentences"]
    return {"sentences": sentences}


@task(name="evaluate-champion", task_run_name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion_task(params: Params, registry: Registry, alias: str) -> dict:
    """The champion's version and report (eval.json's layout) on the current test data."""
    champion = champion_metrics(params, registry, alias)
    if champion is None:
        raise ValueError(f"no model behind {params.registry.model_name}:{alias} in the registry")
    # champion_markdown raises for a champion that cannot label this test set
    create_markdown_artifact(key="champion-evaluation", markdown=reports.champion_markdown(params, alias, champion),
                             description="Champion on the current test data")
    return {"version": champion.version, **champion.report.model_dump(mode="json")}


@flow(name=EVALUATE_CHAMPION_FLOW, log_prints=True)
def evaluate_champion(alias: str = "champion", workspace: Workspace = "in-place", revision: str = "HEAD",
                      params_file: str = DEFAULT_PARAMS, data_source: str | None = None) -> dict:
    """Score the registered model behind `alias` on the current test data (rebuilt or pulled by DVC)."""
    with working_copy(workspace, revision, params_file, data_source) as (settings, params), \
            time_limited(f"flow {EVALUATE_CHAMPION_FLOW}", params, (*DATA_STAGES, "evaluate")):
        reproduce(DATA_STAGES, params, settings)
        metrics = evaluate_champion_task(params, registry_of(settings), alias)
    return {"model": params.registry.model_name, "version": metrics["version"], "f1": metrics["f1"]}
