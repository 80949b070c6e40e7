"""Faults around registration, on a real SeaweedFS and the real Prefect tasks of flows/orchestration/pipeline.py:
S3 killed in the middle of a publish, and two runs registering at once with different results."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from flows.registry import PULL_MARKER, AliasConflict, Registry
from tasks.settings import s3_client
from tests.faults.conftest import kill_s3, start_s3
from tests.helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def model_folder(path: Path, seed: int, files: int = 12) -> Path:
    """A model-like folder of `files` 256 KiB files whose bytes depend on `seed` (its own digest)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"id2label": {"0": "O"}, "seed": seed}))
    for index in range(files):
        (path / f"shard-{index:02d}.bin").write_bytes(bytes([(seed + index) % 256]) * (256 << 10))
    return path


def test_s3_killed_during_publish_leaves_nothing_visible_and_a_rerun_publishes_one(private_s3, tmp_path, reliability):
    settings = private_s3
    registry = Registry(s3_client(settings), settings.registry_bucket, "fault-publish")
    model = model_folder(tmp_path / "model", seed=1)
    uploads, real_put = [], registry.client.put_object

    def put_then_crash(**request):  # the fault: S3 dies after the third weights file has landed
        response = real_put(**request)
        if "/files/" in request["Key"]:
            uploads.append(request["Key"])
            if len(uploads) == 3:
                kill_s3(settings)
        return response

    registry.client.put_object = put_then_crash
    started = time.monotonic()
    with pytest.raises(Exception) as failure:
        registry.publish("ner", model, {"run": "a"}, run_id="run-a")
    seconds_to_fail = time.monotonic() - started
    assert "Could not connect" in str(failure.value) or "Connection" in type(failure.value).__name__, failure.value

    restarted = time.monotonic()
    start_s3(settings)
    registry = Registry(s3_client(settings), settings.registry_bucket, "fault-publish")
    restart_s = time.monotonic() - restarted
    assert registry.versions("ner") == []  # claimed and partly uploaded, but invisible: no manifest
    assert registry.publish("ner", model, {"run": "a"}, run_id="run-a") == 1  # the task's retry
    assert registry.publish("ner", model, {"run": "b"}, run_id="run-b") == 1  # a later re-run: same weights
    assert registry.versions("ner") == [1]
    pulled = registry.download("ner", 1, tmp_path / "pulled")  # every checksum verified
    assert sorted(p.name for p in pulled.iterdir()) == sorted([PULL_MARKER, *(p.name for p in model.iterdir())])
    reliability(fault="S3 (SeaweedFS) killed with SIGKILL during a registry publish, after 3 of 13 files",
                happened="publish failed with a connection error; the claimed version had no manifest, so no reader "
                         "saw it; after a restart the same run's retry finished that version, a later run with the "
                         "same weights published nothing",
                recovered=True, lost="nothing (versions after: [1], checksums verified)",
                seconds_to_fail=round(seconds_to_fail, 1), seconds_to_restart_s3=round(restart_s, 1))


def write_params(tmp_path: Path, model: Path, name: str, f1: float) -> Path:
    """A params file whose paths point at this run's model and metrics (what register reads)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    metrics = tmp_path / f"eval-{model.name}.json"
    metrics.write_text(json.dumps({"f1": f1, "precision": f1, "recall": f1, "sentences": 10, "per_type": {}}))
    training = tmp_path / f"train-{model.name}.json"
    training.write_text(json.dumps({"device": "cpu", "train_seconds": 1}))
    raw["paths"].update(model=str(model), eval_metrics=str(metrics), train_metrics=str(training))
    raw["registry"]["model_name"] = name
    path = tmp_path / f"params-{model.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_two_runs_registering_at_once_get_distinct_versions_and_one_champion(
        private_s3, prefect_client_of, tmp_path, reliability):
    """Both gates saw champion v1; both publish; the compare-and-swap lets exactly one become champion."""
    from prefect import flow

    from flows.orchestration.gate import Decision
    from flows.orchestration.pipeline import params_fingerprint, register
    from tasks.params import load_params

    settings = private_s3
    registry = Registry(s3_client(settings), settings.registry_bucket, "fault-concurrent")
    name = "ner"
    registry.set_alias(name, "champion", registry.publish(name, model_folder(tmp_path / "v1", seed=10), {}))
    runs = {run: load_params(write_params(tmp_path, model_folder(tmp_path / run, seed=seed), name, f1))
            for run, seed, f1 in (("run-a", 20, 0.61), ("run-b", 30, 0.62))}
    decision = Decision(promote=True, reasons=["test"], champion_version=1)
    barrier, outcomes = threading.Barrier(2), {}

    @flow(name="fault-register")
    def one_run(run: str) -> int:
        barrier.wait()
        return register(runs[run], registry, decision, settings, params_fingerprint())

    def attempt(run: str) -> None:
        state = one_run(run, return_state=True)
        outcomes[run] = state.result(raise_on_failure=False)

    # Each thread runs in a copy of this context, so it talks to the same Prefect server (settings live
    # in a context variable, which a new thread would not inherit).
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(attempt, run)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert sorted(registry.versions(name)) == [1, 2, 3]  # both candidates published, distinct numbers
    winners = {run: v for run, v in outcomes.items() if isinstance(v, int)}
    losers = {run: e for run, e in outcomes.items() if isinstance(e, AliasConflict)}
    assert len(winners) == 1 and len(losers) == 1, outcomes
    champion = registry.get_alias(name, "champion")
    assert champion == next(iter(winners.values()))
    assert f"v{champion}" in str(next(iter(losers.values()))) and "re-run" in str(next(iter(losers.values())))
    assert registry._read_alias(name, "champion")[0]["history"] == [1]  # no lost update: v1 -> winner
    reliability(fault="two runs registering at once, both gated against champion v1",
                happened=f"both published (v2, v3); the champion compare-and-swap let one win (v{champion}); the "
                         "other run failed with AliasConflict naming both versions and saying to re-run",
                recovered=True, lost="nothing (alias history [1], every version complete)")


def test_a_failed_model_card_copy_creates_no_second_version(private_s3, prefect_client_of, tmp_path, reliability):
    """The reports bucket refuses the card: registration still completes once; a re-run adds nothing."""
    from prefect import flow

    from flows.orchestration.gate import Decision
    from flows.orchestration.pipeline import params_fingerprint, register
    from tasks.params import load_params

    settings = private_s3.model_copy(update={"reports_bucket": "no-such-bucket"})
    registry = Registry(s3_client(settings), settings.registry_bucket, "fault-card")
    params = load_params(write_params(tmp_path, model_folder(tmp_path / "model", seed=5), "ner", 0.7))

    @flow(name="fault-card")
    def one_run() -> int:
        return register(params, registry, Decision(promote=True, reasons=["test"]), settings, params_fingerprint())

    first = one_run(return_state=True)
    assert first.is_completed(), first.message
    second = one_run(return_state=True)
    assert second.is_completed(), second.message
    assert first.result() == second.result() == 1
    assert registry.versions("ner") == [1] and registry.get_alias("ner", "champion") == 1
    reliability(fault="model card copy to the reports bucket fails (bucket missing)",
                happened="the version and the champion alias were written once; the card copy logged a warning "
                         "(the card is inside the version); a re-run found the same weights and published nothing",
                recovered=True, lost="nothing (versions [1])")


def test_params_edited_during_a_run_refuse_registration(private_s3, prefect_client_of, tmp_path, monkeypatch,
                                                        reliability):
    from prefect import flow

    from flows.orchestration.gate import Decision
    from flows.orchestration.pipeline import RegistrationRefused, params_fingerprint, register
    from tasks.params import load_params

    monkeypatch.chdir(tmp_path)
    params_path = write_params(tmp_path, model_folder(tmp_path / "model", seed=9), "ner", 0.7)
    (tmp_path / "params.yaml").write_text(params_path.read_text())
    registry = Registry(s3_client(private_s3), private_s3.registry_bucket, "fault-params")

    @flow(name="fault-params")
    def one_run() -> int:
        started_with = params_fingerprint()
        (tmp_path / "params.yaml").write_text(params_path.read_text().replace("epochs:", "epochs:  "))  # an edit
        return register(load_params(params_path), registry, Decision(promote=True, reasons=["t"]), private_s3,
                        started_with)

    state = one_run(return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RegistrationRefused) and "params.yaml changed during this run" in str(error)
    assert registry.versions("ner") == []
    reliability(fault="params.yaml edited while a run was training",
                happened="registration refused at once (no retry), naming both params hashes",
                recovered=True, lost="nothing registered that the params file does not describe")

