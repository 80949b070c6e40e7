"""The flow against real services: a candidate below the gate's floor is never registered.

Every stage really runs, fast: synthetic pre-split data, no augmentation, and a tiny randomly
initialised BERT (built here from the packaged MiniLM tokenizer). Its F1 cannot reach a floor of 1.0, so
the gate must reject it.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from flows.registry import Registry
from tasks.settings import Settings, s3_client
from tests.helpers import NO_VARIANTS, api_post, run_flow, scratch_clone, set_params, synthetic_splits, tiny_encoder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def rejected_run(tmp_path_factory, local_services: Settings):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    synthetic_splits(repo / "data/external/synthetic")
    encoder = tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))
    set_params(repo, ingest={"source": "data/external/synthetic"},
               task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": []},
               train={"base_model": str(encoder), "max_length": 32, "epochs": 1, "batch_size": 32},
               gate={"min_f1": 1.0}, registry={"model_name": "gate-reject-test"}, compress=NO_VARIANTS)
    result = run_flow(repo, local_services)
    return repo, result, result.stdout + result.stderr


def test_run_exits_nonzero_and_says_why(rejected_run):
    _, result, output = rejected_run
    assert result.returncode == 1, output[-4000:]
    assert "gate rejected the candidate" in output
    assert "< floor gate.min_f1 1.0000" in output


def test_nothing_is_registered(rejected_run, local_services: Settings):
    registry = Registry(s3_client(local_services), local_services.registry_bucket, local_services.registry_prefix)
    assert registry.versions("gate-reject-test") == []
    assert registry.get_alias("gate-reject-test", "champion") is None


def test_every_stage_ran_and_the_metrics_are_real(rejected_run):
    repo, _, _ = rejected_run
    metrics = json.loads((repo / "data" / "metrics" / "eval.json").read_text())
    assert 0.0 <= metrics["f1"] < 1.0
    status = subprocess.run([".venv/bin/dvc", "status"], cwd=repo, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout.lower()


def test_prefect_records_a_failed_run_with_the_gate_decision(rejected_run, local_services: Settings):
    query = {"flows": {"name": {"any_": ["flowtune-pipeline"]}}, "sort": "START_TIME_DESC", "limit": 5}
    runs = api_post(local_services, "flow_runs/filter", json=query).json()
    ours = [r for r in runs if r["state_type"] == "FAILED"]
    assert ours, [(r["name"], r["state_type"]) for r in runs]
    artifacts = api_post(local_services, "artifacts/filter",
                         json={"artifacts": {"flow_run_id": {"any_": [ours[0]["id"]]}}}).json()
    gate = [a for a in artifacts if a["key"] == "gate-decision"]
    assert gate and "reject" in gate[0]["data"].lower()
    assert "registered-model" not in {a["key"] for a in artifacts}
