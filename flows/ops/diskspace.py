"""Refuse to start a run on a nearly full disk (review N4): say how much is free and how to free more.

A stage that meets a full disk fails half-way (tests/faults: the clean stage on a full tmpfs); checking
before the run starts costs one `statvfs` per folder and fails the run at once, in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.settings import Settings

GB = 1_000_000_000


class DiskFullError(RuntimeError):
    """Less free disk than `FLOWTUNE_MIN_FREE_GB` where a run writes; the message says what to do."""


def free_bytes(folder: Path) -> int:
    """Free bytes for this user on the file system holding `folder` (or its nearest existing parent)."""
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_disk(settings: Settings, checkout: Path = Path(".")) -> None:
    """DiskFullError when the checkout's or the state dir's file system has less than `min_free_gb` free."""
    if settings.min_free_gb <= 0:
        return
    for folder in (checkout, settings.state_dir):
        free = free_bytes(folder)
        if free < settings.min_free_gb * GB:
            raise DiskFullError(
                f"only {free / GB:.1f} GB free on the disk of {folder.resolve()} (a run needs "
                f"FLOWTUNE_MIN_FREE_GB={settings.min_free_gb:g}): `flowtune gc` lists what it would free and its "
                "total, `flowtune gc --apply` deletes it")
