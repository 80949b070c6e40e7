"""The drift monitor on real services (tests/conftest.py `local_services`: SeaweedFS and a Prefect server):
captured batches in the capture bucket, versions with their reference.json in the registry, `flowtune monitor`
run as a user runs it. Unshifted traffic raises nothing; shifted traffic (long, URL-heavy, all-caps) flags
exactly those measures and sends one `flowtune.drift.detected` event, read back from the server."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from flows.ops.monitor import DRIFT_EVENT
from flows.ops.reference import REFERENCE_FILE
from flows.ops.services import prefect_auth_header
from flows.registry import Registry
from tasks.drift import profile_of
from tasks.settings import Settings, s3_client
from tests.drift_traffic import SHIFTS, stats, traffic
from tests.helpers import ROOT, clean_env, client_env_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two `flowtune monitor` runs as flow runs (~1.5 min)

SHIFTED = ("long", "urls", "caps")


def publish(registry: Registry, tmp: Path, name: str, with_reference: bool) -> None:
    """A registered version: a stand-in weights file and, unless old, the reference of 2,000 ordinary items."""
    import random

    folder = tmp / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": name}))
    if with_reference:
        rng = random.Random(11)
        (folder / REFERENCE_FILE).write_text(json.dumps(profile_of(stats(rng) for _ in range(2000)).to_json()))
    assert registry.publish(name, folder, {"registered_at": "2026-12-07T00:00:00"}) == 1


@pytest.fixture(scope="module")
def world(local_services: Settings, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("monitor")
    client = s3_client(local_services)
    tag = uuid.uuid4().hex[:8]
    bucket = f"capture-{tag}"
    client.create_bucket(Bucket=bucket)
    names = {"calm": f"calm-{tag}", "shifted": f"shifted-{tag}", "old": f"old-{tag}"}
    registry = Registry(client, local_services.registry_bucket, local_services.registry_prefix)
    for role, name in names.items():
        publish(registry, tmp, name, with_reference=role != "old")
    batches = [*traffic(names["calm"], 1, 1000, 250, seed=1), *traffic(names["old"], 1, 300, 300, seed=2),
               *traffic(names["shifted"], 1, 1000, 250, seed=3, shift=set(SHIFTED))]
    for key, body in batches:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    day, leaf = batches[0][0].rsplit("/", 1)
    hour = leaf[:2]  # an hour of the window (bad files of a future hour would not even be listed)
    client.put_object(Bucket=bucket, Key=f"{day}/{hour}-truncated.jsonl.gz", Body=batches[0][1][:-100])
    client.put_object(Bucket=bucket, Key=f"{day}/{hour}-notgzip.jsonl.gz", Body=b"plain text\n")
    work = tmp / "work"
    work.mkdir()
    (work / ".env").write_text(client_env_file(local_services) + f"FLOWTUNE_CAPTURE_BUCKET={bucket}\n")
    return {"settings": local_services, "work": work, "names": names, "bucket": bucket, "bad": f"{day}/{hour}"}


def monitor(world: dict, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = world["work"] / f"report-{uuid.uuid4().hex[:6]}.json"
    result = subprocess.run([str(ROOT / ".venv/bin/flowtune"), "monitor", "--params-file", str(ROOT / "params.yaml"),
                             "--json", str(out), *args], cwd=world["work"], env=clean_env(PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())


@pytest.fixture(scope="module")
def ran(world: dict) -> tuple[subprocess.CompletedProcess, dict]:
    return monitor(world, "--since", "24h")


def drift_events(settings: Settings, model: str, wait_s: float) -> list[dict]:
    """The server's stored drift events about `model` (the server persists events in batches)."""
    body = {"filter": {"event": {"name": [DRIFT_EVENT]}, "resource": {"id": [f"flowtune.model.{model}"]}},
            "limit": 50}
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.post(f"{settings.api_url}/events/filter", json=body, headers=prefect_auth_header(settings),
                              timeout=30)
        response.raise_for_status()
        events = response.json()["events"]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(1)


def test_shifted_traffic_flags_exactly_the_shifted_measures_and_unshifted_traffic_nothing(ran, world):
    result, report = ran
    versions = {v["model"]: v for v in report["versions"]}
    names = world["names"]
    assert versions[names["calm"]]["drifted"] == [] and versions[names["calm"]]["items"] == 1000
    expected = sorted(m for shift in SHIFTED for m in SHIFTS[shift])
    assert sorted(versions[names["shifted"]]["drifted"]) == expected
    assert {r["verdict"] for r in versions[names["calm"]]["rows"]} == {"ok"}
    assert "has no reference.json" in versions[names["old"]]["note"] and versions[names["old"]]["rows"] == []
    assert report["drift"] is True
    assert "url" in result.stdout and "drift" in result.stdout  # the table is printed


def test_bad_batch_files_are_skipped_and_named_without_failing_the_run(ran, world):
    _, report = ran
    where = f"s3://{world['bucket']}/{world['bad']}"
    assert set(report["skipped_files"]) == {f"{where}-truncated.jsonl.gz", f"{where}-notgzip.jsonl.gz"}
    assert "BadGzipFile" in report["skipped_files"][f"{where}-notgzip.jsonl.gz"]
    assert "EOFError" in report["skipped_files"][f"{where}-truncated.jsonl.gz"]
    assert report["items"] == 2300  # the good files, whole


def test_drift_sends_one_event_naming_the_model_and_the_measures(ran, world):
    settings, names = world["settings"], world["names"]
    (event,) = drift_events(settings, names["shifted"], wait_s=60)
    assert event["resource"]["prefect.resource.name"] == names["shifted"]
    payload = event["payload"]
    assert payload["model"] == names["shifted"] and payload["version"] == 1
    assert sorted(m["measure"] for m in payload["measures"]) == sorted(m for s in SHIFTED for m in SHIFTS[s])
    assert all(m["statistic"] > m["threshold"] for m in payload["measures"])
    assert drift_events(settings, names["calm"], wait_s=3) == []  # no false alarm


def test_the_report_and_plots_are_in_the_reports_bucket(ran, world):
    _, report = ran
    settings = world["settings"]
    links = report["links"]
    client = s3_client(settings)
    for url in links.values():
        key = url.split(f"/{settings.reports_bucket}/", 1)[1]
        body = client.get_object(Bucket=settings.reports_bucket, Key=key)["Body"].read()
        assert body.startswith(b"<svg") if key.endswith(".svg") else json.loads(body)["drift"] is True
    assert f"{world['names']['shifted']} v1" in links and f"{world['names']['old']} v1" not in links


def test_a_window_without_traffic_says_so(world):
    result, report = monitor(world, "--model", "nobody-served-this", "--since", "2h")
    assert report["status"].startswith("no traffic in the window") and report["versions"] == []
    assert "no traffic in the window" in result.stdout
