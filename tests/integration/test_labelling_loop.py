"""The labelling loop against a real Label Studio, started by `services up --with label-studio` beside the session's
SeaweedFS and Prefect: select (from a file, a tiny tagger) -> push -> a simulated annotator -> pull -> a new batch
file in the source folder and `flowtune.data.changed` acknowledged by Prefect; a second pull imports nothing.

Label Studio's venv (about 1 GB; 12 min to install on two busy cores) is the user's cache,
`~/.cache/flowtune/label-studio-<version>/`: the first run on a machine installs it, later runs and clones
reuse it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.labelling.loop import config_for, project_title, push, push_review, review_title
from flows.labelling.rounds import run_pull, run_pull_review, run_select
from flows.labelling.selection import text_key
from flows.labelling.studio import Studio, StudioError, studio_from_settings
from flows.names import DATA_CHANGED_EVENT
from flows.ops import services
from flows.ops.services import labelstudio
from tasks.params import load_params
from tests.annotator import annotate, result_of
from tests.helpers import ROOT
from tests.unit.test_predictors import saved

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TAGS = ["O", "B-person", "I-person", "B-loc", "I-loc"]
KNOWN = [(["Alice", "lives", "in", "Paris"], ["B-person", "O", "O", "B-loc"])]  # already in the source
GOLD = {
    "Bob met Carol in Rome": ["B-person", "O", "B-person", "O", "B-loc"],
    "nothing to see here": ["O", "O", "O", "O"],
    "Dave flew to New York": ["B-person", "O", "O", "B-loc", "I-loc"],
    "Eve stayed home": ["B-person", "O", "O"],
}
SKIPPED = "Eve stayed home"  # the annotator skips it: an empty submission


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_base: Path) -> Path:
    """A checkout-like folder: params.yaml (task labels person/loc, a source folder with one file), a tiny tagger,
    a file of candidates (one already labelled, one repeated)."""
    root = tmp_path_factory.mktemp("labelling")
    source = root / "data" / "external" / "mine"
    source.mkdir(parents=True)
    (source / "first.jsonl").write_text("".join(json.dumps({"tokens": t, "tags": g}) + "\n" for t, g in KNOWN))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"]["labels"] = ["person", "loc"]
    params["ingest"]["source"] = "data/external/mine"
    params["label"] |= {"strategy": "uncertainty+diversity", "n_items": 10}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    texts = [" ".join(t) for t, _ in KNOWN] + list(GOLD) + ["bob  MET carol in rome"]
    (root / "candidates.jsonl").write_text("".join(json.dumps({"tokens": t.split()}) + "\n" for t in texts))
    saved(tiny_base, root / "tagger", "AutoModelForTokenClassification", TAGS, {"max_length": 16, "task_kind": "ner"})
    return root


@pytest.fixture(scope="module")
def studio_settings(local_services, workdir: Path, free_port):
    """`services.up(settings, with_=("label-studio",))` (what `services up --with label-studio` runs) in the
    session's scratch state dir; Label Studio is stopped at the end."""
    settings = local_services.model_copy(update={"label_studio_port": free_port()})  # the venv: the user's cache
    previous = Path.cwd()
    os.chdir(workdir)  # .env (the Label Studio token) is written here, as in a checkout
    try:
        started = time.monotonic()
        services.up(settings, ("label-studio",))
        print(f"Label Studio install (if not cached) + start: {time.monotonic() - started:.0f} s")
        yield labelstudio.ensure_credentials(settings, generate=False)
    finally:
        services.stop(settings, labelstudio.NAME)
        os.chdir(previous)


def test_select_push_annotate_pull(studio_settings, workdir: Path):
    settings = studio_settings
    params = load_params("params.yaml")
    report = services.status(settings)[labelstudio.NAME]
    assert report["healthy"] and report["pid"] and report["url"] == f"http://127.0.0.1:{settings.label_studio_port}"
    assert (workdir / ".env").stat().st_mode & 0o777 == 0o600

    selection, path = run_select(params, settings, "candidates.jsonl", str(workdir / "tagger"))
    chosen = {c.text for c in selection.chosen}
    assert chosen == set(GOLD) and selection.excluded == 2  # the source's sentence, the repeat

    studio = studio_from_settings(settings)
    title = project_title(params)
    assert push(studio, title, config_for(params, TAGS), selection.chosen, "tagger") == (4, 0, True)
    assert push(studio, title, config_for(params, TAGS), selection.chosen, "tagger")[:2] == (0, 4)
    project = studio.find_project(title)
    tasks = studio.export(project["id"], all_tasks=True)
    assert all(task["predictions"] for task in tasks)  # the champion's pre-annotations went along

    assert annotate(studio, project["id"], GOLD, cancel=[SKIPPED]) == {"annotated": 3, "cancelled": 1, "no_gold": 0}
    first = label_pull(settings, workdir)  # as a user runs it: its own process, settings from the environment
    assert first.returncode == 0, first.stderr
    assert "3 new labelled rows; 0 refused, 1 empty submissions skipped, 0 imported before" in first.stdout
    assert f"event {DATA_CHANGED_EVENT} sent for model {params.registry.model_name}" in first.stdout
    batches = list((workdir / "data" / "external" / "mine" / "batches").glob("labelstudio-*.jsonl"))
    rows = [json.loads(line) for line in batches[0].read_text().splitlines()]
    assert len(batches) == 1 and {" ".join(r["tokens"]): r["tags"] for r in rows} == {
        text: tags for text, tags in GOLD.items() if text != SKIPPED}

    again, nothing = run_pull(params, settings)
    assert not again.rows and nothing is None and again.already == 3


def test_a_task_breaking_the_contract_is_refused_then_fixed_and_pulled(studio_settings, workdir: Path):
    """Two spaces make an empty token: the contract refuses the task by id and nothing is written; the task's text
    and annotation fixed in Label Studio, the next pull imports it."""
    settings, params = studio_settings, load_params("params.yaml")
    studio = studio_from_settings(settings)
    project = studio.find_project(project_title(params))
    studio.import_tasks(project["id"], [{"data": {"text": "Frank  met Grace", "key": text_key("Frank met Grace")}}])
    task = next(t for t in studio.export(project["id"], all_tasks=True) if t["data"]["text"] == "Frank  met Grace")
    studio.annotate(task["id"], result_of("Frank  met Grace", ["B-person", "O", "O", "B-person"], "ner"))
    batches = workdir / "data" / "external" / "mine" / "batches"
    before = sorted(batches.iterdir())

    refused, nothing = run_pull(params, settings)
    assert nothing is None and sorted(batches.iterdir()) == before
    assert "token_not_blank" in refused.refused[task["id"]] and not refused.rows

    [annotation] = next(t for t in studio.export(project["id"]) if t["id"] == task["id"])["annotations"]
    studio.call("PATCH", f"tasks/{task['id']}/", json={"data": {"text": "Frank met Grace",
                                                                "key": text_key("Frank met Grace")}})
    studio.call("PATCH", f"annotations/{annotation['id']}/",
                json={"result": result_of("Frank met Grace", ["B-person", "O", "B-person"], "ner")})
    fixed, added = run_pull(params, settings)
    assert not fixed.refused and [r["tags"] for r in fixed.rows] == [["B-person", "O", "B-person"]]
    assert added is not None and len(sorted(batches.iterdir())) == len(before) + 1


def test_review_push_queues_the_audits_suspects_and_pull_brings_corrections(studio_settings, workdir: Path):
    settings, params = studio_settings, load_params("params.yaml")
    items = [{"id": "first.jsonl:1", "tokens": KNOWN[0][0], "given": ["O", "O", "O", "B-loc"],
              "suggested": KNOWN[0][1], "score": 0.02}]
    studio = studio_from_settings(settings)
    assert push_review(studio, params, items, TAGS) == (1, 0, True)
    review = studio.find_project(review_title(params))
    [task] = studio.export(review["id"], all_tasks=True)
    assert "Label audit" in task["data"]["review_note"] and "'Alice' person" in task["data"]["review_note"]
    assert task["predictions"] and "$review_note" in review["label_config"]
    assert annotate(studio, review["id"], {" ".join(KNOWN[0][0]): KNOWN[0][1]})["annotated"] == 1
    pulled, added = run_pull_review(params, settings)
    assert [r["id"] for r in pulled.rows] == ["first.jsonl:1"] and added.path.parent.name == "corrections"
    assert json.loads(added.path.read_text())["tags"] == KNOWN[0][1]


def label_pull(settings, workdir: Path) -> subprocess.CompletedProcess:
    """`flowtune label pull` in `workdir` against the test's services (its .env holds the Label Studio token)."""
    from flows.ops.services import service_env

    env = {**os.environ, **service_env(settings), "PYTHONPATH": str(ROOT),
           "FLOWTUNE_LABEL_STUDIO_PORT": str(settings.label_studio_port)}
    return subprocess.run([sys.executable, "-m", "flows.cli.main", "label", "pull"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_wrong_token_or_a_stopped_studio_is_one_line(studio_settings):
    with pytest.raises(StudioError, match=r"refused the API token.*FLOWTUNE_LABEL_STUDIO_TOKEN"):
        Studio(studio_settings.labelling_url, "f" * 40).find_project("x")
    with pytest.raises(StudioError, match="does not answer"):
        Studio("http://127.0.0.1:1", "f" * 40).find_project("x")


def test_select_reads_captured_traffic_from_s3(local_services, workdir: Path, monkeypatch):
    """serve's capture layout in the real SeaweedFS: today's and yesterday's objects are read, older ones and
    redacted records are not, and the source's sentence is still excluded."""
    import gzip
    from datetime import UTC, datetime, timedelta

    from tasks.settings import s3_client

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FLOWTUNE_CAPTURE_BUCKET", "flowtune-capture-test")
    client = s3_client(local_services)
    client.create_bucket(Bucket="flowtune-capture-test")
    params = load_params("params.yaml")
    params = params.model_copy(update={"label": params.label.model_copy(update={"window_days": 1})})
    model, now = params.registry.model_name, datetime.now(UTC)

    def put(day: datetime, name: str, records: list[dict]) -> None:
        body = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
        client.put_object(Bucket="flowtune-capture-test", Key=f"{model}/{day:%Y-%m-%d}/{name}.jsonl.gz", Body=body)

    put(now, "10-a", [{"model": model, "input": "Zed visited Oslo"}, {"model": model, "output": {}}])
    put(now - timedelta(days=1), "23-b", [{"model": model, "input": {"tokens": ["Alice", "lives", "in", "Paris"]}}])
    put(now - timedelta(days=5), "01-c", [{"model": model, "input": "too old to matter"}])
    selection, _ = run_select(params, local_services, None, str(workdir / "tagger"), out=str(workdir / "sel.jsonl"))
    assert [c.text for c in selection.chosen] == ["Zed visited Oslo"]
    assert selection.redacted == 1 and selection.excluded == 1 and selection.chosen[0].origin.startswith(model)
