"""What object storage and the DVC cache hold, and what the rules drop from it: registry versions and claims,
Data Docs, run folders and workspaces, DVC objects (cache, remote, run cache).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from flows.ops.gc.objects import MD5, MODEL_CARDS, Deletion, Obj, logger
from flows.ops.gc.rules import (
    lock_hashes,
    older_than,
    pinned_versions,
    select_objects,
    select_orphans,
    select_runs,
    select_versions,
    used_hashes,
)
from tasks.params import GcParams


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


