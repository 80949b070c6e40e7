"""The fault-injection suite: real faults (kill -9, a stopped S3 or Prefect server, a full disk) on real
services, each test asserting that nothing is lost and nothing half-visible.

Each test records one row with the `reliability` fixture: the fault, what happened, whether the system
recovered and whether anything was lost, plus the numbers it measured. At the end of the session the
rows are written to `.pytest_cache/flowtune/reliability.json`; `python benchmarks/reliability_report.py`
turns them into the table of docs/RELIABILITY.md, so the document shows what the tests saw.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

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
        previous = json.loads(path.read_text()) if path.exists() else {"rows": []}
        ours = {row.test for row in self.rows}  # a partial re-run replaces only its own rows
        rows = [r for r in previous["rows"] if r["test"] not in ours] + [asdict(r) for r in self.rows]
        path.write_text(json.dumps({"written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=2))


_SESSION = Reliability()


@pytest.fixture(scope="session")
def reliability_log() -> Reliability:
    yield _SESSION
    _SESSION.save()


@pytest.fixture
def reliability(reliability_log: Reliability, request):
    """`reliability(fault=..., happened=..., recovered=..., lost=..., **numbers)` records this test's row."""
    def record(**row) -> None:
        reliability_log.record(request.node.nodeid, **row)
    return record


def start_s3(settings):
    """`services.up` from the private set's folder (it wires `.dvc/config.local` of the current
    directory: never the repository's own)."""
    import os

    from flows import services

    previous = Path.cwd()
    os.chdir(settings.state_dir.parent)
    try:
        settings = services.ensure_credentials(settings)
        services.up(settings)
    finally:
        os.chdir(previous)
    return settings


def kill_s3(settings) -> None:
    """kill -9 the private SeaweedFS (its whole process group), as a crash or an OOM kill would."""
    import os
    import signal

    from flows import services

    pid = services.running_pid(settings, "seaweedfs")
    assert pid is not None, "the private SeaweedFS is not running"
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while services.running_pid(settings, "seaweedfs") is not None and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory, local_services):
    """A SeaweedFS of this module's own (safe to kill), on free ports; Prefect stays the session's server.
    Yields its Settings; stopped at the end of the module."""
    from flows import services
    from tests.conftest import dvc_workdir, private_settings

    workdir = dvc_workdir(tmp_path_factory.mktemp("private-s3"))
    settings = start_s3(private_settings(workdir, prefect_api_url=local_services.api_url, start_worker=False))
    try:
        yield settings
    finally:
        services.down(settings)


@pytest.fixture
def prefect_client_of(local_services):
    """In-process flows and tasks talk to the session's Prefect server (not an ephemeral one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: local_services.api_url}):
        yield local_services
