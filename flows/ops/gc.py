"""`flowtune gc`: delete what the retention rules (`gc:` in params.yaml) no longer keep.

Everything flowtune writes has a rule (docs/DECISIONS.md 29):

- failed runs' workspaces `<state_dir>/workspaces/<flow run id>/`: older than `keep_days`;
- registry claims with no manifest (a registration that died) and the files it uploaded: older than
  `grace_hours`; the highest claim of a model stays, so version numbers are never reused;
- registry versions: kept are the newest `keep_versions`, those younger than `keep_version_days`, every
  alias's target and the last `alias_history` versions it pointed at (rollback keeps working); the rest
  go with their model cards, manifest first, so a version vanishes for readers in one step;
- Data Docs `s3://<reports>/data-docs/<run id>/` and run folders `s3://<dvc>/flowtune-runs/<run id>/`:
  older than `keep_days`, unless the run produced a kept version (its lineage `flow_run.id`);
- DVC objects (cache `files/md5/` and the remote's): those no kept record needs, older than `grace_hours`.
  Kept records: the checkout's dvc.lock and .dvc files, kept workspaces' dvc.lock, kept versions'
  lineage `dvc_lock`, kept run folders' dvc.lock and run-cache entries younger than `keep_days`. A
  run-cache entry that names a deleted object is deleted with it (DVC could not restore it anyway);
- Prefect flow runs in a final state that ended more than `prefect_keep_days` ago (with their artifacts;
  their logs go with the server's orphan vacuum), through the Prefect API, unless a kept version names
  the run; skipped, in one line, when no Prefect API answers;
- service logs `<state_dir>/logs/*.log` past `log_max_mb`: rotated to `.1` .. `.log_keep`, older copies
  dropped (`services up` rotates them too, before a service starts);
- sweep plots `s3://<reports>/sweeps/<study>/<run id>/` older than `keep_days`, but the newest of a study
  that a params file or a kept version names; studies of the Optuna journal that nothing names and that
  saw no trial for `keep_days` (the journal is rewritten without them, under its lock, never while a
  trial runs);
- captured serving traffic `s3://<capture>/<model>/<day>/` (`flowtune serve --capture`): objects older than
  `capture_keep_days`.

Not covered: `serve NAME@N` pins: a fixed version
is recorded nowhere, so gc cannot see it; only aliases keep a version (checked again just before, and
just after, its manifest is deleted).

A dry run (the default) prints each deletion with its size, and the total; `apply=True` deletes and
logs one line per deletion. The `flowtune-gc` flow runs it with `apply=True` (weekly deployment `gc`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.names import GC_FLOW
from tasks import sweeping
from tasks.params import GcParams, load_params
from tasks.settings import Settings, s3_client

logger = logging.getLogger("flowtune.gc")

DATA_DOCS = "data-docs/"
RUN_FOLDERS = "flowtune-runs/"
MODEL_CARDS = "model-cards/"
MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
DIR_SUFFIX = ".dir"
DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects call takes


# ---------------------------------------------------------------- what gc sees and what it deletes


@dataclass(frozen=True)
class Obj:
    """One stored object: an S3 key or a local file, its size and when it was last written."""

    key: str
    size: int
    modified: datetime


@dataclass
class Deletion:
    """One thing to delete: S3 keys (in order) or a local path, with its size and the rule that chose it."""

    kind: str
    where: str
    size: int
    reason: str
    bucket: str | None = None
    keys: tuple[str, ...] = ()
    path: Path | None = None
    # Checked again just before deleting; a returned reason skips the deletion (a race with a writer).
    still_wanted: Callable[[], str | None] | None = None
    # Checked once more after the first key (a version's manifest) is gone; a returned reason puts that key
    # back and keeps the rest (a promote that checked the version before the manifest went).
    confirm_after_first: Callable[[], str | None] | None = None
    # Neither S3 keys nor a local path (a Prefect flow run, a log rotation): what deleting it means.
    action: Callable[[], None] | None = None


class KeptBack(RuntimeError):
    """A deletion stopped halfway and undone, because its thing is wanted after all; the message says why."""


@dataclass
class Report:
    deletions: list[Deletion]
    applied: bool
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rules not applied this time (no Prefect server ...)

    @property
    def total(self) -> int:
        return sum(d.size for d in self.deletions)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (count, bytes)."""
        summary: dict[str, tuple[int, int]] = {}
        for d in self.deletions:
            count, size = summary.get(d.kind, (0, 0))
            summary[d.kind] = (count + 1, size + d.size)
        return summary


def human(size: int) -> str:
    """Bytes as a short human-readable figure (1.5 MiB)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# ---------------------------------------------------------------- pure selection rules


def older_than(modified: datetime, now: datetime, age: timedelta) -> bool:
    return now - modified > age


def select_runs(runs: dict[str, datetime], protected: set[str], now: datetime, keep_days: int) -> list[str]:
    """Run ids (workspaces, Data Docs, run folders) to delete: last written more than `keep_days` ago and
    not in `protected` (runs that produced a kept registered version)."""
    age = timedelta(days=keep_days)
    return sorted(run for run, modified in runs.items() if run not in protected and older_than(modified, now, age))


def pinned_versions(pointers: dict[str, dict], alias_history: int) -> set[int]:
    """Versions an alias needs: each alias's target and the last `alias_history` entries of its history
    (what `flowtune registry rollback` would point it at next)."""
    pinned = set()
    for pointer in pointers.values():
        pinned.add(int(pointer["version"]))
        history = [int(v) for v in pointer.get("history", [])]
        pinned.update(history[len(history) - alias_history:] if alias_history else [])
    return pinned


def select_versions(published: dict[int, datetime], pinned: set[int], rules: GcParams, now: datetime) -> list[int]:
    """Published versions to delete. Invariant: the newest `keep_versions`, every version younger than
    `keep_version_days` and every pinned (aliased) version stay."""
    newest = set(sorted(published)[-rules.keep_versions:])
    young = {v for v, when in published.items() if not older_than(when, now, timedelta(days=rules.keep_version_days))}
    return sorted(set(published) - newest - young - pinned)


def select_orphans(claims: dict[int, datetime], files: dict[int, datetime], published: set[int], now: datetime,
                   grace: timedelta) -> list[int]:
    """Version numbers claimed or holding files but with no manifest, whose newest object is older than
    `grace` (younger ones may be a registration in progress)."""
    numbers = (set(claims) | set(files)) - published
    newest = {n: max(t for t in (claims.get(n), files.get(n)) if t is not None) for n in numbers}
    return sorted(n for n in numbers if older_than(newest[n], now, grace))


def lock_hashes(record: object) -> set[str]:
    """Every DVC md5 (file or `.dir`) a dvc.lock, a .dvc file or a run-cache entry names, at any depth."""
    found: set[str] = set()
    if isinstance(record, dict):
        for key, value in record.items():
            if key == "md5" and isinstance(value, str) and MD5.match(value):
                found.add(value)
            else:
                found |= lock_hashes(value)
    elif isinstance(record, list):
        for item in record:
            found |= lock_hashes(item)
    return found


def used_hashes(records: Iterable[object], read_dir: Callable[[str], list | None]) -> set[str]:
    """The md5s the records need: theirs plus each `.dir` object's entries (read with `read_dir`; None
    when the listing is nowhere, which keeps only the `.dir` hash itself)."""
    used: set[str] = set()
    for record in records:
        used |= lock_hashes(record)
    for digest in [h for h in used if h.endswith(DIR_SUFFIX)]:
        used |= {entry["md5"] for entry in read_dir(digest) or [] if MD5.match(str(entry.get("md5", "")))}
    return used


def select_objects(objects: dict[str, Obj], used: set[str], now: datetime, grace: timedelta) -> list[str]:
    """DVC objects (md5 -> object) to delete: not used, and older than `grace` (a stage that is writing
    its outputs has not recorded them in a dvc.lock yet)."""
    return sorted(h for h, obj in objects.items() if h not in used and older_than(obj.modified, now, grace))


# ---------------------------------------------------------------- listing


def list_objects(client, bucket: str, prefix: str) -> list[Obj]:
    """Every object under `prefix` (paginated)."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(Obj(o["Key"], o["Size"], o["LastModified"]) for o in page.get("Contents", []))
    return found


def group_by_folder(objects: list[Obj], prefix: str) -> dict[str, list[Obj]]:
    """`<prefix><folder>/...` objects by folder (a run id)."""
    groups: dict[str, list[Obj]] = {}
    for obj in objects:
        folder, sep, _ = obj.key[len(prefix):].partition("/")
        if sep and folder:
            groups.setdefault(folder, []).append(obj)
    return groups


def newest(objects: Iterable[Obj]) -> datetime:
    return max(o.modified for o in objects)


def local_obj(path: Path, key: str) -> Obj:
    """A local file as an Obj; its age is the later of mtime and ctime (a move into the cache keeps the
    mtime of the stage's output but sets the ctime)."""
    info = path.stat()
    return Obj(key, info.st_size, datetime.fromtimestamp(max(info.st_mtime, info.st_ctime), UTC))


def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a file removed while we walk
                total += (Path(root) / name).lstat().st_size
    return total


# ---------------------------------------------------------------- the registry


def still_unpinned(registry, name: str, version: int, alias_history: int) -> Callable[[], str | None]:
    """A re-check just before deletion: an alias moved onto `version` since the plan was made.

    `serve NAME@N` pins nothing anywhere (no record of it exists to read): a server started on a fixed
    version that gc deletes keeps serving the copy it loaded, and fails at its next start. Point an
    alias at a version to keep it (`flowtune registry promote`)."""
    def check() -> str | None:
        pinned = pinned_versions(registry.alias_pointers(name), alias_history)
        return f"an alias points at {name} v{version} now" if version in pinned else None
    return check


@dataclass
class RegistryPlan:
    deletions: list[Deletion]
    kept_manifests: list[dict]  # manifests of the versions that stay: their lineage protects runs and data


def plan_registry(registry, reports_bucket: str, rules: GcParams, now: datetime) -> RegistryPlan:
    """Versions beyond the retention rules (with their model cards) and orphan claims, every model."""
    plan = RegistryPlan([], [])
    for name in registry.models():
        store = registry.inventory(name)
        cards = {o.key: o for o in list_objects(registry.client, reports_bucket, f"{MODEL_CARDS}{name}/")}
        published = {n: obj.modified for n, obj in store.manifests.items()}
        top_claim = max(store.claims, default=None)
        doomed = select_versions(published, pinned_versions(store.pointers, rules.alias_history), rules, now)
        for number in doomed:
            recheck = still_unpinned(registry, name, number, rules.alias_history)
            plan.deletions.append(Deletion(
                "version", registry.version_url(name, number), store.version_size(number),
                "beyond the retention rules, not aliased", registry.bucket,
                store.version_keys(number, keep_claim=number == top_claim), still_wanted=recheck,
                confirm_after_first=recheck))
            card = cards.get(f"{MODEL_CARDS}{name}/{number}.md")
            if card:
                plan.deletions.append(Deletion("model-card", f"s3://{reports_bucket}/{card.key}", card.size,
                                               f"card of deleted {name} v{number}", reports_bucket, (card.key,),
                                               still_wanted=recheck))
        files_newest = {n: newest(objs) for n, objs in store.files.items()}
        claims = {n: o.modified for n, o in store.claims.items()}
        grace = timedelta(hours=rules.grace_hours)
        for number in select_orphans(claims, files_newest, set(published), now, grace):
            keys = store.version_keys(number, keep_claim=number == top_claim)
            if keys:
                plan.deletions.append(Deletion(
                    "orphan-claim", registry.version_url(name, number), store.version_size(number),
                    "claimed but never published", registry.bucket, keys))
        plan.kept_manifests += [registry.manifest(name, n) for n in sorted(set(published) - set(doomed))]
    return plan


def lineage_runs(manifests: list[dict]) -> set[str]:
    """Flow run ids that produced the given versions (`metadata.flow_run.id`)."""
    runs = {((m.get("metadata") or {}).get("flow_run") or {}).get("id") for m in manifests}
    return {str(run) for run in runs if run}


def lineage_locks(manifests: list[dict]) -> list[object]:
    """The parsed dvc.lock each version's lineage recorded (a string is parsed as YAML)."""
    locks = [(m.get("metadata") or {}).get("dvc_lock") for m in manifests]
    return [yaml.safe_load(lock) if isinstance(lock, str) else lock for lock in locks if lock]


# ---------------------------------------------------------------- runs: workspaces, Data Docs, run folders


def plan_folders(client, bucket: str, prefix: str, kind: str, protected: set[str], rules: GcParams,
                 now: datetime) -> tuple[list[Deletion], list[str]]:
    """Per-run folders under `s3://bucket/prefix<run id>/` past `keep_days`; (deletions, run ids kept)."""
    groups = group_by_folder(list_objects(client, bucket, prefix), prefix)
    doomed = select_runs({run: newest(objs) for run, objs in groups.items()}, protected, now, rules.keep_days)
    deletions = [Deletion(kind, f"s3://{bucket}/{prefix}{run}/", sum(o.size for o in groups[run]),
                          f"run older than {rules.keep_days} days", bucket, tuple(o.key for o in groups[run]))
                 for run in doomed]
    return deletions, sorted(set(groups) - set(doomed))


def plan_workspaces(folder: Path, rules: GcParams, now: datetime) -> tuple[list[Deletion], list[Path]]:
    """Failed runs' workspaces (a successful run removes its own) past `keep_days`; (deletions, kept)."""
    found = {p.name: p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}
    ages = {name: datetime.fromtimestamp(path.stat().st_mtime, UTC) for name, path in found.items()}
    doomed = select_runs(ages, set(), now, rules.keep_days)
    deletions = [Deletion("workspace", str(found[name]), tree_size(found[name]),
                          f"failed run's checkout older than {rules.keep_days} days", path=found[name])
                 for name in doomed]
    return deletions, [found[name] for name in sorted(set(found) - set(doomed))]


# ---------------------------------------------------------------- Prefect flow runs


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


# ---------------------------------------------------------------- DVC cache and remote


@dataclass(frozen=True)
class DvcStore:
    """Where DVC keeps content-addressed objects: the local cache and the default remote (S3 or none)."""

    cache: Path  # <cache dir>/files/md5
    run_cache: Path  # <cache dir>/runs
    bucket: str | None
    prefix: str  # "<remote path>/files/md5/" inside the bucket


def dvc_store(root: Path) -> DvcStore:
    """The cache and remote DVC uses in the checkout `root` (its config and config.local)."""
    from urllib.parse import urlsplit

    from dvc.repo import Repo

    repo = Repo(str(root), uninitialized=True)
    try:
        cache, legacy = Path(repo.cache.local.path), Path(repo.cache.legacy.path)
        remote = repo.config["core"].get("remote")
        url = repo.config["remote"][remote]["url"] if remote else ""
    finally:
        repo.close()
    parts = urlsplit(url)
    bucket = parts.netloc if parts.scheme == "s3" else None  # another kind of remote: only the cache is collected
    path = parts.path.strip("/")
    return DvcStore(cache, legacy / "runs", bucket, f"{path}/files/md5/" if path else "files/md5/")


def cache_objects(cache: Path) -> dict[str, Obj]:
    """md5 -> object of every file in the local cache's `files/md5/<2>/<rest>` layout."""
    found = {}
    for shard in (cache.iterdir() if cache.is_dir() else []):
        for path in (shard.iterdir() if shard.is_dir() and len(shard.name) == 2 else []):
            digest = shard.name + path.name
            if path.is_file() and MD5.match(digest):
                found[digest] = local_obj(path, str(path))
    return found


def remote_objects(client, store: DvcStore) -> dict[str, Obj]:
    """md5 -> object of the remote's `files/md5/<2>/<rest>` keys."""
    found = {}
    for obj in list_objects(client, store.bucket, store.prefix) if store.bucket else []:
        digest = "".join(obj.key[len(store.prefix):].split("/"))
        if MD5.match(digest):
            found[digest] = obj
    return found


def dir_reader(client, store: DvcStore) -> Callable[[str], list | None]:
    """Read a `.dir` object (a JSON list of {md5, relpath}) from the cache, else from the remote."""
    def read(digest: str) -> list | None:
        local = store.cache / digest[:2] / digest[2:]
        try:
            if local.is_file():
                return json.loads(local.read_text())
            if store.bucket:
                key = f"{store.prefix}{digest[:2]}/{digest[2:]}"
                return json.loads(client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
        except Exception as exc:  # noqa: BLE001 - a missing or broken listing keeps only the .dir itself
            logger.warning("DVC directory object %s unreadable (%s): its files count as unused", digest, exc)
        return None
    return read


def read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def checkout_records(root: Path) -> list[object]:
    """The checkout's dvc.lock and .dvc files (what `dvc gc --workspace` would keep)."""
    records = [read_yaml(root / "dvc.lock")]
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"node_modules", "__pycache__"}]
        records += [read_yaml(Path(folder) / name) for name in files if name.endswith(".dvc")]
    return [r for r in records if r]


def run_cache_entries(folder: Path) -> dict[Path, tuple[object, datetime]]:
    """DVC's run-cache: `runs/<2>/<stage key>/<entry>` YAML files, each a single stage's lock."""
    entries = {}
    for path in folder.glob("*/*/*") if folder.is_dir() else []:
        if path.is_file():
            entries[path] = (read_yaml(path), local_obj(path, str(path)).modified)
    return entries


def plan_dvc(client, store: DvcStore, records: list[object], rules: GcParams, now: datetime) -> list[Deletion]:
    """Cache and remote objects no kept record needs, and the run-cache entries that name them."""
    entries = run_cache_entries(store.run_cache)
    recent = [entry for entry, modified in entries.values()
              if entry and not older_than(modified, now, timedelta(days=rules.keep_days))]
    used = used_hashes([*records, *recent], dir_reader(client, store))
    grace = timedelta(hours=rules.grace_hours)
    deletions = []
    cached = cache_objects(store.cache)
    for digest in select_objects(cached, used, now, grace):
        deletions.append(Deletion("dvc-cache", cached[digest].key, cached[digest].size,
                                  "no kept run or version uses it", path=Path(cached[digest].key)))
    remote = remote_objects(client, store)
    for digest in select_objects(remote, used, now, grace):
        deletions.append(Deletion("dvc-remote", f"s3://{store.bucket}/{remote[digest].key}", remote[digest].size,
                                  "no kept run or version uses it", store.bucket, (remote[digest].key,)))
    for path, (entry, _) in sorted(entries.items()):
        if not lock_hashes((entry or {}).get("outs")) <= used:
            deletions.append(Deletion("dvc-run-cache", str(path), path.stat().st_size,
                                      "names an output that is deleted", path=path))
    return deletions


# ---------------------------------------------------------------- the whole plan, and applying it


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


# A promote checks that the version's manifest exists, then writes the alias (milliseconds apart). After
# deleting a manifest gc waits this long and reads the aliases again: a promote that passed its check just
# before the manifest went has written its alias by then, and the manifest is put back.
SETTLE_S = 2.0


def delete(client, deletion: Deletion) -> None:
    """Delete one planned item; S3 keys in order, the first alone (a version's manifest)."""
    if deletion.action is not None:
        deletion.action()
        return
    if deletion.path is not None:
        if deletion.path.is_dir():
            shutil.rmtree(deletion.path)
        else:
            deletion.path.unlink(missing_ok=True)
        return
    first, *rest = deletion.keys
    delete_first(client, deletion, first)
    for start in range(0, len(rest), DELETE_BATCH):
        batch = [{"Key": key} for key in rest[start:start + DELETE_BATCH]]
        errors = client.delete_objects(Bucket=deletion.bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors")
        if errors:
            first_error = errors[0]
            raise RuntimeError(f"{len(errors)} keys not deleted, the first {first_error.get('Key')}: "
                               f"{first_error.get('Message')}")


def delete_first(client, deletion: Deletion, key: str) -> None:
    """Delete the first key; with `confirm_after_first`, re-check after SETTLE_S and put it back if wanted."""
    if deletion.confirm_after_first is None:
        client.delete_object(Bucket=deletion.bucket, Key=key)
        return
    body = client.get_object(Bucket=deletion.bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=deletion.bucket, Key=key)
    time.sleep(SETTLE_S)
    reason = deletion.confirm_after_first()
    if reason:
        client.put_object(Bucket=deletion.bucket, Key=key, Body=body)
        raise KeptBack(reason)


def say(line: str) -> None:
    """One line to stdout (in a flow: the run's log, as the flow logs prints) and to `flowtune.gc` logging."""
    print(line, flush=True)
    logger.info(line)


def apply_one(client, deletion: Deletion, report: Report) -> None:
    line = f"{deletion.kind:<13} {human(deletion.size):>10}  {deletion.where}  ({deletion.reason})"
    skip = deletion.still_wanted() if deletion.still_wanted else None
    if skip:
        report.skipped.append(f"{deletion.where}: {skip}")
        say(f"kept          {line}: {skip}")
        return
    try:
        delete(client, deletion)
    except KeptBack as exc:
        report.skipped.append(f"{deletion.where}: {exc}")
        say(f"kept          {line}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - one failure must not stop the rest; it is reported and fails the run
        report.failed.append(f"{deletion.where}: {exc}")
        say(f"FAILED        {line}: {exc}")
        return
    say(f"deleted       {line}")


def vacuum(settings: Settings) -> None:
    """Ask the local SeaweedFS to compact volumes now: deleted objects free disk only then."""
    if settings.s3_endpoint_url:  # someone else's S3: it reclaims space on its own terms
        return
    from flows.ops.services import ServiceError, seaweedfs, weed_shell

    # The threshold must be explicit: without it a vacuum uses weed's built-in 0.3, not the master's
    # -master.garbageThreshold (measured: 20% deleted, nothing reclaimed). Same value as the flag.
    flag = next(f for f in seaweedfs(settings).command if f.startswith("-master.garbageThreshold="))
    threshold = flag.split("=")[1]
    try:
        weed_shell(settings, f"volume.vacuum -garbageThreshold {threshold}")
        say(f"SeaweedFS compacted its volumes with at least {threshold} garbage")
    except (ServiceError, OSError) as exc:
        say(f"SeaweedFS vacuum not possible ({exc}); its master compacts on its own within 15 min")


def run_gc(settings: Settings, rules: GcParams, root: Path = Path("."), *, apply: bool = False,
           now: datetime | None = None) -> Report:
    """Plan with the rules and print the plan (dry run), or delete it (`apply`); one line per item."""
    deletions, notes = collect(settings, rules, root, now or datetime.now(UTC))
    report = Report(deletions, apply, notes=notes)
    client = s3_client(settings)
    for note in notes:
        say(f"skipped       {note}")
    for deletion in report.deletions:
        if apply:
            apply_one(client, deletion, report)
        else:
            say(f"would delete  {deletion.kind:<13} {human(deletion.size):>10}  {deletion.where}  ({deletion.reason})")
    counts = ", ".join(f"{kind} {n} ({human(size)})" for kind, (n, size) in report.by_kind().items()) or "nothing"
    say(f"{'deleted' if apply else 'would delete'} {len(report.deletions)} items, {human(report.total)} in total: "
        f"{counts}" + ("" if apply else "  (dry run: `flowtune gc --apply` deletes)"))
    if apply and report.deletions:
        vacuum(settings)
    return report


def summary_markdown(report: Report) -> str:
    """The flow run's artifact: what was deleted, per kind, and what failed or was kept back."""
    rows = [f"| {kind} | {n} | {human(size)} |" for kind, (n, size) in report.by_kind().items()]
    done = len(report.deletions) - len(report.failed) - len(report.skipped)
    lines = ["# Storage garbage collection", "",
             f"Deleted {done} of {len(report.deletions)} planned items ({human(report.total)} planned).", "",
             "| kind | items | size |", "|---|---:|---:|", *rows, ""]
    lines += [f"- failed: {line}" for line in report.failed] + [f"- kept back: {line}" for line in report.skipped]
    lines += [f"- not applied: {line}" for line in report.notes]
    return "\n".join(lines) + "\n"


class GcError(RuntimeError):
    """Some planned deletions failed; the message lists them."""


@flow(name=GC_FLOW, log_prints=True)
def garbage_collect(params_file: str = "params.yaml") -> dict:
    """Apply the retention rules of `params_file` (section `gc:`) to everything flowtune stored."""
    settings = Settings()
    report = run_gc(settings, load_params(params_file).gc, apply=True)
    create_markdown_artifact(key="gc-summary", markdown=summary_markdown(report), description="flowtune gc")
    if report.failed:
        raise GcError(f"{len(report.failed)} deletions failed: " + "; ".join(report.failed[:5]))
    return {"deleted": len(report.deletions) - len(report.skipped), "bytes": report.total}
