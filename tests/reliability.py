"""Rows of docs/RELIABILITY.md, recorded by the tests that inject each fault (fixture `reliability`).

At the end of the session the rows are written to `.pytest_cache/flowtune/reliability.json`;
`python benchmarks/reliability_report.py --write docs/RELIABILITY.md` turns them into the table, so the
document shows what the tests saw.
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.helpers import ROOT

REPORT = ROOT / ".pytest_cache" / "flowtune" / "reliability.json"


@dataclass
class Row:
    fault: str
    happened: str
    recovered: bool
    lost: str
    numbers: dict = field(default_factory=dict)
    test: str = ""


class Reliability:
    """Collects the rows of one session (tests call `record` once their assertions passed)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def record(self, test: str, fault: str, happened: str, recovered: bool, lost: str, **numbers) -> None:
        self.rows.append(Row(fault, happened, recovered, lost, numbers, test))

    def save(self, path: Path = REPORT) -> None:
        if not self.rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Each pytest-xdist worker saves its own rows at its end: one at a time, each merging into the file.
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            previous = json.loads(path.read_text()) if path.exists() else {"rows": []}
            ours = {row.test for row in self.rows}  # a partial re-run replaces only its own rows
            rows = [r for r in previous["rows"] if r["test"] not in ours] + [asdict(r) for r in self.rows]
            text = json.dumps({"written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=2)
            path.write_text(text)
