"""What grows with every run beside the data, and what the rules drop from it: Prefect flow runs, service logs,
sweep plots and the Optuna journal.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.ops.gc.objects import Deletion, KeptBack, Obj
from flows.ops.gc.rules import older_than, select_runs
from flows.ops.gc.stored import list_objects, newest, read_yaml
from tasks.params import GcParams
from tasks.settings import Settings


@dataclass(frozen=True)
class FlowRunInfo:
    id: str
    name: str
    ended: datetime


class PrefectRuns:
    """Finished flow runs on the configured Prefect server (`settings.api_url`, with our auth string)."""

    PAGE = 200

    def __init__(self, settings: Settings):
        self.settings = settings

    @contextlib.contextmanager
    def client(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        updates = {PREFECT_API_URL: self.settings.api_url}
        if self.settings.prefect_api_auth_string:
            updates[PREFECT_API_AUTH_STRING] = self.settings.prefect_api_auth_string.get_secret_value()
        with temporary_settings(updates=updates), get_client(sync_client=True) as client:
            yield client

    def finished_before(self, cutoff: datetime) -> list[FlowRunInfo]:
        """Runs in a final state (never a scheduled, pending or running one) that ended before `cutoff`."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterEndTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        final = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
        query = FlowRunFilter(end_time=FlowRunFilterEndTime(before_=cutoff),
                              state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final)))
        found: list[FlowRunInfo] = []
        with self.client() as client:
            while page := client.read_flow_runs(flow_run_filter=query, limit=self.PAGE, offset=len(found)):
                found += [FlowRunInfo(str(run.id), run.name, run.end_time) for run in page]
                if len(page) < self.PAGE:
                    break
        return found

    def delete(self, run_id: str) -> None:
        """Delete the run's artifacts, then the run (its task runs and states go with it). Its logs have no
        delete API: the server's orphan vacuum removes them within a day (`prefect_server` turns it on)."""
        from uuid import UUID

        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        query = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
        with self.client() as client:
            for artifact in client.read_artifacts(artifact_filter=query):
                client.delete_artifact(artifact.id)
            client.delete_flow_run(UUID(run_id))


def plan_flow_runs(runs, protected: set[str], rules: GcParams, now: datetime) -> list[Deletion]:
    """Finished flow runs older than `prefect_keep_days`, except those that produced a kept version (a model
    card links to its run). `runs`: a PrefectRuns, or a fake with `finished_before` and `delete`."""
    cutoff = now - timedelta(days=rules.prefect_keep_days)
    return [Deletion("flow-run", f"prefect flow run {run.name} ({run.id})", 0,
                     f"finished more than {rules.prefect_keep_days} days ago; its artifacts and logs go too",
                     action=functools.partial(runs.delete, run.id))
            for run in runs.finished_before(cutoff) if run.id not in protected]


def prefect_reachable(settings: Settings) -> str | None:
    """None when the Prefect API answers an authenticated call, else one line saying why not."""
    from flows.ops.services import ServiceError, prefect_check

    try:
        prefect_check(settings)
    except (ServiceError, OSError, ImportError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - httpx's connect errors and the like: the server does not answer
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------- service logs


def plan_logs(folder: Path, rules: GcParams) -> list[Deletion]:
    """Service logs (`<state_dir>/logs/*.log`) past `log_max_mb`: rotated (copy and truncate, the service may
    be writing), the copies beyond `log_keep` dropped. The size is what the dropped copies free."""
    from flows.ops.services.processes import rotate_log, rotated_copies

    max_bytes = int(rules.log_max_mb * 1_000_000)
    deletions = []
    for log in sorted(folder.glob("*.log")) if folder.is_dir() else []:
        copies = rotated_copies(log)
        if log.stat().st_size > max_bytes:
            dropped = sum(path.stat().st_size for number, path in copies.items() if number >= rules.log_keep)
            deletions.append(Deletion(
                "service-log", str(log), dropped,
                f"past {rules.log_max_mb:g} MB: rotated to .1, copies beyond .{rules.log_keep} dropped",
                action=functools.partial(rotate_log, log, max_bytes, rules.log_keep, True)))
        else:  # copies left beyond the rule (log_keep lowered since they were made)
            deletions += [Deletion("service-log", str(path), path.stat().st_size,
                                   f"rotated copy beyond gc.log_keep={rules.log_keep}", path=path)
                          for number, path in sorted(copies.items()) if number > rules.log_keep]
    return deletions


# ---------------------------------------------------------------- sweeps: plots and the Optuna journal

SWEEP_PLOTS = "sweeps/"


def named_studies(root: Path, manifests: list[dict]) -> set[str]:
    """Studies a kept record names: `sweep.study` of the checkout's params files and of kept versions' params
    (`flowtune sweep apply` and a resumed sweep read them)."""
    records = [read_yaml(path) for path in sorted(root.glob("params*.yaml"))]
    records += [(m.get("metadata") or {}).get("params") for m in manifests]
    return {str(study) for r in records if isinstance(r, dict)
            if (study := (r.get("sweep") or {}).get("study"))}


def select_sweep_runs(runs: dict[str, datetime], named: set[str], now: datetime, keep_days: int) -> list[str]:
    """`<study>/<run id>` plot folders to delete: older than `keep_days`, except the newest run of a named
    study (each sweep run plots the study's whole history, so older runs' plots are superseded)."""
    newest_of: dict[str, tuple[datetime, str]] = {}
    for folder, when in runs.items():
        study = folder.split("/", 1)[0]
        if study in named and (study not in newest_of or when > newest_of[study][0]):
            newest_of[study] = (when, folder)
    kept = {folder for _, folder in newest_of.values()}
    return select_runs(runs, kept, now, keep_days)


def plan_sweep_plots(client, bucket: str, named: set[str], rules: GcParams, now: datetime) -> list[Deletion]:
    """`s3://<reports>/sweeps/<study>/<run id>/` folders past `keep_days` (see `select_sweep_runs`)."""
    groups: dict[str, list[Obj]] = {}
    for obj in list_objects(client, bucket, SWEEP_PLOTS):
        study, _, rest = obj.key[len(SWEEP_PLOTS):].partition("/")
        run, sep, _ = rest.partition("/")
        if study and run and sep:
            groups.setdefault(f"{study}/{run}", []).append(obj)
    doomed = select_sweep_runs({folder: newest(objs) for folder, objs in groups.items()}, named, now, rules.keep_days)
    return [Deletion("sweep-plots", f"s3://{bucket}/{SWEEP_PLOTS}{folder}/", sum(o.size for o in groups[folder]),
                     f"sweep plots older than {rules.keep_days} days", bucket, tuple(o.key for o in groups[folder]))
            for folder in doomed]


def plan_captures(client, bucket: str, rules: GcParams, now: datetime) -> tuple[list[Deletion], str | None]:
    """Captured traffic `s3://<capture>/<model>/<day>/...` older than `capture_keep_days`, one deletion per day
    folder (its objects past the age; a batch written late into an old folder waits for its own age); and a
    note when there is no capture bucket (nothing was ever captured)."""
    from botocore.exceptions import ClientError

    try:
        objects = list_objects(client, bucket, "")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        return [], f"captured data: no bucket {bucket!r} (nothing captured)"
    age = timedelta(days=rules.capture_keep_days)
    groups: dict[str, list[Obj]] = {}
    for obj in objects:
        if older_than(obj.modified, now, age):
            groups.setdefault(obj.key.rsplit("/", 1)[0] if "/" in obj.key else "", []).append(obj)
    return [Deletion("capture", f"s3://{bucket}/{folder}/", sum(o.size for o in objs),
                     f"captured traffic older than {rules.capture_keep_days} days", bucket, tuple(o.key for o in objs))
            for folder, objs in sorted(groups.items())], None


def journal_storage(journal: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(journal)))


def stale_studies(storage, named: set[str], now: datetime, keep_days: int) -> list[str]:
    """Studies that no kept record names and that saw no trial for `keep_days` (a study without trials: its
    creation time is unknown to Optuna, so it goes once nothing names it)."""
    stale = []
    for study in storage.get_all_studies():
        times = [t for trial in storage.get_all_trials(study._study_id, deepcopy=False)
                 for t in (trial.datetime_start, trial.datetime_complete) if t]
        recent = any(not older_than(t.astimezone(UTC), now, timedelta(days=keep_days)) for t in times)
        if study.study_name not in named and not recent:
            stale.append(study.study_name)
    return stale


def sweep_running(storage) -> bool:
    """A trial is RUNNING: a sweep may be using the journal (or died; its next start fails such trials)."""
    from optuna.trial import TrialState

    return any(trial.state == TrialState.RUNNING for study in storage.get_all_studies()
               for trial in storage.get_all_trials(study._study_id, deepcopy=False))


def compact_journal(journal: Path, drop: list[str]) -> None:
    """Rewrite the journal without the `drop` studies while holding the journal's own lock (a sweep that
    starts meanwhile waits for it), then replace the file in one rename. No study left: the file goes."""
    import optuna
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(journal))  # the lock JournalFileBackend takes for every write
    lock.acquire()
    try:
        source = journal_storage(journal)
        if sweep_running(source):
            raise KeptBack("a sweep started meanwhile (a trial is running)")
        keep = [s.study_name for s in source.get_all_studies() if s.study_name not in drop]
        fresh = journal.with_name(f".{journal.name}.compact")
        fresh.unlink(missing_ok=True)
        target = journal_storage(fresh)
        for name in keep:
            optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
        if keep:
            os.replace(fresh, journal)
        else:
            journal.unlink()
            fresh.unlink(missing_ok=True)
    finally:
        lock.release()


def plan_journal(journal: Path, named: set[str], rules: GcParams, now: datetime) -> tuple[list[Deletion], str | None]:
    """The sweep journal rewritten without its stale studies; (deletions, a line when it must wait).

    The size is the whole journal's (an upper bound: the kept studies are copied into the new file)."""
    if not journal.is_file():
        return [], None
    storage = journal_storage(journal)
    drop = stale_studies(storage, named, now, rules.keep_days)
    if not drop:
        return [], None
    if sweep_running(storage):
        return [], f"sweep journal {journal}: not compacted, a trial is running (a sweep is on, or died)"
    written = datetime.fromtimestamp(journal.stat().st_mtime, UTC)
    if not older_than(written, now, timedelta(hours=rules.grace_hours)):  # a sweep may be starting its study
        return [], f"sweep journal {journal}: not compacted, written less than {rules.grace_hours:g} h ago"
    return [Deletion("sweep-journal", f"{journal} (studies {', '.join(drop)})", journal.stat().st_size,
                     f"at most this: no params file or kept version names them, no trial for {rules.keep_days} days",
                     action=functools.partial(compact_journal, journal, drop))], None


