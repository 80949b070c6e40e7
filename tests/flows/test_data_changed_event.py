"""`flowtune data add` sends `flowtune.data.changed` to a real Prefect server (tests/flows/conftest.py): the
command runs as a user runs it, in its own process pointed at the server by PREFECT_API_URL, and the event
is read back from the server's event store with its resource (the model) and payload (file, rows, sha256)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flows.names import DATA_CHANGED_EVENT, model_resource_id

ROOT = Path(__file__).resolve().parents[2]


def project(folder: Path, model_name: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["source"] = "data/external/mine"
    params["registry"]["model_name"] = model_name
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data" / "external" / "mine").mkdir(parents=True)


def data_add(folder: Path, file: Path) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("PREFECT_API_AUTH_STRING", None)  # the test server has no auth
    return subprocess.run([sys.executable, "-m", "flows.cli.main", "data", "add", str(file)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def events_about(resource_id: str, wait_s: float = 30) -> list:
    """The server's stored data.changed events of `resource_id` (the server persists events in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[DATA_CHANGED_EVENT]),
                         resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(filter=wanted, limit=50).events  # the server refuses more than 50
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.5)


def test_data_add_sends_the_data_changed_event_with_model_and_batch(tmp_path: Path):
    project(tmp_path, "event-test-model")
    batch = tmp_path / "2026-12.conll"
    batch.write_text("".join(f"w{i}\tB-person\nruns\tO\n\n" for i in range(12)))

    result = data_add(tmp_path, batch)
    assert result.returncode == 0, result.stderr
    assert f"event {DATA_CHANGED_EVENT} sent for model event-test-model" in result.stdout

    events = events_about(model_resource_id("event-test-model"))
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == "flowtune.model.event-test-model"
    assert event.resource.name == "event-test-model"
    assert event.payload == {"file": "data/external/mine/batches/2026-12.conll", "rows": 12,
                             "sha256": hashlib.sha256(batch.read_bytes()).hexdigest(), "commit": None}


def test_a_refused_batch_sends_no_event(tmp_path: Path):
    project(tmp_path, "refused-test-model")
    bad = tmp_path / "bad.conll"
    bad.write_text("untagged\n")
    result = data_add(tmp_path, bad)
    assert result.returncode == 1 and "bad.conll:1: expected 'token<TAB>tag'" in result.stderr
    assert events_about(model_resource_id("refused-test-model"), wait_s=5) == []
