"""Credentials never reach lineage or model cards (both end up in the registry; cards in a public bucket)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.orchestration import lineage
from flows.orchestration.gate import Decision
from flows.redact import scrub_urls, strip_credentials
from tasks.metrics import EvalReport, Headline
from tasks.params import load_params
from tasks.settings import Settings
from tests.helpers import ROOT

SECRETS = ("hunter2", "ghp_SECRET", "abc123tok", "AKIAEXAMPLE", "deadbeefsig")


@pytest.mark.parametrize("url, expected", [
    ("http://admin:hunter2@prefect.example.com:4200/api", "http://prefect.example.com:4200/api"),
    ("https://x-access-token:ghp_SECRET@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("http://minio:hunter2@s3.internal:9000", "http://s3.internal:9000"),
    ("https://data.example.com/train.csv?token=abc123tok&page=2", "https://data.example.com/train.csv?page=2"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLE%2F20261201&X-Amz-Signature=deadbeefsig",
     "https://b.s3.amazonaws.com/k"),
    ("http://user:p@ss:hunter2@host/", "http://host/"),  # a password holding '@'
    ("http://127.0.0.1:4200/api?a=1&b=2", "http://127.0.0.1:4200/api?a=1&b=2"),  # nothing to strip: unchanged
    ("s3://flowtune-dvc/dvcstore", "s3://flowtune-dvc/dvcstore"),
])
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_scrub_urls_reaches_urls_inside_text_lists_and_dicts() -> None:
    value = {"reasons": ["champion from http://admin:hunter2@h/api, kept"], "n": 3,
             "remote": ("https://x-access-token:ghp_SECRET@github.com/o/r.git",)}
    assert scrub_urls(value) == {"reasons": ["champion from http://h/api, kept"], "n": 3,
                                 "remote": ("https://github.com/o/r.git",)}


def eval_report() -> EvalReport:
    return EvalReport(task="text-classification", title="text classification", predicts="one label per text",
                      headline=Headline(name="macro F1", value=0.5, precision=0.6, recall=0.43), unit="text",
                      count=10, group="label", groups={"positive": {"precision": 0.7, "recall": 0.5, "f1": 0.58,
                                                                    "support": 4}})


def test_lineage_and_model_card_hold_no_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    eval_report().write(tmp_path / "eval.json")
    (tmp_path / "train.json").write_text(json.dumps({"train_sentences": 4}))
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={
        "paths": params.paths.model_copy(update={"eval_metrics": "eval.json", "train_metrics": "train.json"}),
        "ingest": params.ingest.model_copy(update={"source": "https://u:abc123tok@data.example.com/d.csv"})})
    (tmp_path / "dvc.lock").write_text("stages:\n  ingest:\n    deps:\n    - path: "
                                       "https://x-access-token:ghp_SECRET@github.com/o/data.git\n")
    monkeypatch.setattr(lineage.flow_run, "get_id", lambda: "run-1")
    settings = Settings(_env_file=None, prefect_api_url="http://admin:hunter2@prefect.example.com/api")
    decision = Decision(promote=True, reasons=["first version (see http://minio:hunter2@s3.internal:9000)"])
    recorded = lineage.build_lineage(params, decision, settings)
    card = lineage.model_card(params, recorded)
    assert recorded["flow_run"]["url"] == "http://prefect.example.com/runs/flow-run/run-1"
    assert recorded["params"]["ingest"]["source"] == "https://data.example.com/d.csv"
    for secret in SECRETS:
        assert secret not in json.dumps(recorded) and secret not in card, secret
