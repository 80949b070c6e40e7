"""The whole plan: every rule applied, registry first (the versions that stay protect runs and DVC data).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import yaml

from flows.ops.gc.history import (
    PrefectRuns,
    named_studies,
    plan_captures,
    plan_flow_runs,
    plan_journal,
    plan_logs,
    plan_sweep_plots,
    prefect_reachable,
)
from flows.ops.gc.objects import DATA_DOCS, RUN_FOLDERS, Deletion
from flows.ops.gc.stored import (
    checkout_records,
    dvc_store,
    lineage_locks,
    lineage_runs,
    plan_dvc,
    plan_folders,
    plan_registry,
    plan_workspaces,
    read_yaml,
)
from tasks import sweeping
from tasks.params import GcParams
from tasks.settings import Settings, s3_client


def collect(settings: Settings, rules: GcParams, root: Path, now: datetime) -> tuple[list[Deletion], list[str]]:
    """Everything the rules delete, registry first: the versions that stay protect runs and DVC data; and a
    line for each rule that could not be applied this time (it is said, not an error)."""
    from flows.registry import Registry

    client = s3_client(settings)
    registry = Registry(client, settings.registry_bucket, settings.registry_prefix)
    kept = plan_registry(registry, settings.reports_bucket, rules, now)
    protected = lineage_runs(kept.kept_manifests)
    docs, _ = plan_folders(client, settings.reports_bucket, DATA_DOCS, "data-docs", protected, rules, now)
    runs, kept_runs = plan_folders(client, settings.dvc_bucket, RUN_FOLDERS, "run-folder", protected, rules, now)
    workspaces, kept_workspaces = plan_workspaces(settings.state_dir.resolve() / "workspaces", rules, now)
    records = [*checkout_records(root), *lineage_locks(kept.kept_manifests),
               *[read_yaml(path / "dvc.lock") for path in kept_workspaces],
               *run_folder_locks(client, settings, kept_runs)]
    dvc = plan_dvc(client, dvc_store(root), [r for r in records if r], rules, now)
    growing, notes = plan_growing(settings, rules, root, now, kept.kept_manifests, protected)
    return [*kept.deletions, *docs, *runs, *workspaces, *dvc, *growing], notes


def plan_growing(settings: Settings, rules: GcParams, root: Path, now: datetime, kept_manifests: list[dict],
                 protected: set[str]) -> tuple[list[Deletion], list[str]]:
    """What grows beside the data (docs/DECISIONS.md 29, review N4): Prefect flow runs, service logs, sweep
    plots and the sweep journal; and the lines for rules that could not run."""
    notes = []
    named = named_studies(root, kept_manifests)
    deletions = plan_sweep_plots(s3_client(settings), settings.reports_bucket, named, rules, now)
    journal, waiting = plan_journal(Path(sweeping.storage_spec(None, settings.state_dir)), named, rules, now)
    deletions += journal
    notes += [waiting] if waiting else []
    deletions += plan_logs(settings.state_dir.resolve() / "logs", rules)
    unreachable = prefect_reachable(settings)
    if unreachable:
        notes.append(f"Prefect flow runs: not collected, no usable Prefect API at {settings.api_url} ({unreachable}); "
                     "start it with `flowtune services up`")
    else:
        deletions += plan_flow_runs(PrefectRuns(settings), protected, rules, now)
    captures, missing = plan_captures(s3_client(settings), settings.capture_bucket, rules, now)
    deletions += captures
    notes += [missing] if missing else []
    return deletions, notes


def run_folder_locks(client, settings: Settings, runs: list[str]) -> list[object]:
    """The dvc.lock a remote train stage left in each kept run folder (flows/orchestration/remote_train.py)."""
    locks = []
    for run in runs:
        with contextlib.suppress(Exception):  # a folder without a lock protects nothing
            body = client.get_object(Bucket=settings.dvc_bucket, Key=f"{RUN_FOLDERS}{run}/dvc.lock")["Body"].read()
            locks.append(yaml.safe_load(body))
    return locks


