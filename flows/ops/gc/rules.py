"""The retention rules as pure functions: what to keep and what to drop, given what exists and when it was written.
No I/O: tests/unit/test_gc.py checks them on made-up inventories.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from flows.ops.gc.objects import DIR_SUFFIX, MD5, Obj
from tasks.params import GcParams


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


