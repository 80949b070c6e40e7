"""Nights where nothing changed: one registered version, and storage that `flowtune gc` keeps flat.

A scratch clone with a tiny random BERT on synthetic data runs the whole pipeline once (registered as
v1), then runs the pipeline flow NIGHTS more times with nothing changed, as a nightly schedule would.
Private services, because `flowtune gc --apply` sweeps whole buckets. What is measured: every bucket, the
DVC cache, the run workspaces, the Prefect database and the service logs; the objects must be back to
about where they were after gc, and the database and logs (which gc trims by age and size, not by the
minute) may grow by a bounded amount per night.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from flows.registry import Registry
from tasks.settings import Settings, s3_client
from tests.helpers import (
    NO_VARIANTS,
    clean_env,
    discard_services,
    run_flow,
    scratch_clone,
    set_params,
    synthetic_splits,
    tiny_encoder,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NIGHTS = 4  # enough to see a trend per night (growth per night is 20x under its bounds); each costs ~17 s of CI
MB = 1_000_000
DB_PER_NIGHT = 2 * MB  # a run's states, task runs, events and logs in the Prefect database
LOGS_PER_NIGHT = MB  # what the services write about one run


def stored_bytes(settings: Settings, repo: Path) -> dict[str, int]:
    """Bytes in each bucket (every object) and in the checkout's DVC cache and run workspaces."""
    client, sizes = s3_client(settings), {}
    for bucket in (settings.dvc_bucket, settings.registry_bucket, settings.reports_bucket):
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            total += sum(item["Size"] for item in page.get("Contents", []))
        sizes[bucket] = total
    for folder in (repo / ".dvc" / "cache", settings.state_dir / "workspaces"):
        sizes[folder.name] = folder_bytes(folder)
    return sizes


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file()) if folder.exists() else 0


def service_bytes(settings: Settings) -> dict[str, int]:
    """The Prefect server's SQLite database (with its WAL) and the services' log files."""
    return {"prefect-db": folder_bytes(settings.state_dir / "prefect", "prefect.db*"),
            "logs": folder_bytes(settings.state_dir / "logs")}


@pytest.fixture(scope="module")
def services(tmp_path_factory, start_local_services) -> Settings:
    settings = start_local_services(tmp_path_factory.mktemp("nights-services"))
    yield settings
    discard_services(settings)


def nights_in_process(repo: Path, settings: Settings, monkeypatch) -> list[float]:
    """NIGHTS runs of the pipeline flow in this process (what `flowtune run` calls, without starting a
    Python each time), in `repo` against `settings`' Prefect server; each must say "unchanged"."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.orchestration.pipeline import training_pipeline

    monkeypatch.chdir(repo)
    seconds = []
    with temporary_settings(updates={PREFECT_API_URL: settings.api_url,
                                     PREFECT_API_AUTH_STRING: settings.prefect_api_auth_string}):
        for night in range(NIGHTS):
            started = time.monotonic()
            state = training_pipeline(return_state=True)
            seconds.append(time.monotonic() - started)
            assert state.is_completed(), f"night {night}: {state.message}"
            assert state.result()["message"] == "unchanged: champion is v1 (same weights)"
    return seconds


def test_noop_nights_register_one_version_and_gc_keeps_storage_flat(tmp_path_factory, services, monkeypatch,
                                                                          reliability):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    synthetic_splits(repo / "data/external/synthetic", count=120)
    name = f"nights-{uuid.uuid4().hex[:8]}"
    set_params(repo, ingest={"source": "data/external/synthetic"},
               task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": ["synonym"]},
               train={"base_model": str(tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))), "max_length": 32,
                      "batch_size": 8, "learning_rate": 5e-3, "epochs": 1},
               gate={"min_f1": 0.0, "min_behaviour": {"name_invariance": 0.0, "minimum_functionality": 0.0}},
               registry={"model_name": name}, compress=NO_VARIANTS,
               gc={"keep_days": 0, "grace_hours": 0})  # "old" = anything not needed now: the test cannot wait days
    first = run_flow(repo, services)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    registry = Registry(s3_client(services), services.registry_bucket, services.registry_prefix)
    assert registry.versions(name) == [1]
    before, services_before = stored_bytes(services, repo), service_bytes(services)

    seconds = nights_in_process(repo, services, monkeypatch)
    assert registry.versions(name) == [1] and registry.get_alias(name, "champion") == 1
    grown = stored_bytes(services, repo)

    sh = {"cwd": repo, "env": clean_env(PYTHONPATH=str(repo)), "capture_output": True, "text": True, "timeout": 600}
    gc = subprocess.run([".venv/bin/flowtune", "gc", "--apply"], **sh)
    assert gc.returncode == 0, (gc.stdout + gc.stderr)[-4000:]
    after = stored_bytes(services, repo)
    growth = sum(after.values()) - sum(before.values())
    assert growth <= NIGHTS * MB, {"before": before, "after gc": after}
    services_after = service_bytes(services)
    per_night = {key: (services_after[key] - services_before[key]) / NIGHTS for key in services_after}
    assert per_night["prefect-db"] <= DB_PER_NIGHT and per_night["logs"] <= LOGS_PER_NIGHT, per_night
    assert registry.versions(name) == [1] and registry.get_alias(name, "champion") == 1
    check = subprocess.run([".venv/bin/dvc", "status"], **sh)
    assert "up to date" in check.stdout.lower(), check.stdout  # gc kept everything the checkout needs
    reliability(fault=f"{NIGHTS} nightly runs with nothing changed (tiny model), then `flowtune gc --apply`",
                happened="every run ended Completed with 'unchanged: champion is v1 (same weights)'; gc removed "
                         "the per-run Data Docs and left the checkout's data in place",
                recovered=True, lost="nothing (one version; dvc status clean)",
                seconds_per_run=round(sum(seconds) / len(seconds), 1),
                growth_before_gc_mb=round((sum(grown.values()) - sum(before.values())) / MB, 2),
                growth_after_gc_mb=round(growth / MB, 2),
                prefect_db_mb_per_night=round(per_night["prefect-db"] / MB, 3),
                logs_mb_per_night=round(per_night["logs"] / MB, 3))
