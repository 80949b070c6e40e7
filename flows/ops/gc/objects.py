"""What gc sees and what it deletes: stored objects, planned deletions, the report.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

logger = logging.getLogger("flowtune.gc")

DATA_DOCS = "data-docs/"
RUN_FOLDERS = "flowtune-runs/"
MODEL_CARDS = "model-cards/"
MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
DIR_SUFFIX = ".dir"
DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects call takes



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


