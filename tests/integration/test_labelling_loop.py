"""The labelling loop against a real Label Studio, started by `services up --with label-studio` beside the session's
SeaweedFS and Prefect: select (from a file, a tiny tagger) -> push -> a simulated annotator -> pull -> a new batch
file in the source folder and `flowtune.data.changed` acknowledged by Prefect; a second pull imports nothing.

Label Studio's venv (about 1 GB; 12 min to install on two busy cores) is the user's cache,
`~/.cache/flowtune/label-studio-<version>/`: the first run on a machine installs it, later runs and clones
reuse it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from flows import services
from flows.label_cli import run_pull, run_select
from flows.labelling.loop import config_for, project_title, push
from flows.labelling.studio import Studio, StudioError, studio_from_settings
from flows.services import labelstudio
from tasks.params import load_params
from tests.annotator import annotate
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
    import os

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
    pulled, added = run_pull(params, settings)
    assert len(pulled.rows) == 3 and pulled.empty == 1 and not pulled.refused
    assert added.path.resolve().parent == workdir / "data" / "external" / "mine" / "batches" and added.rows == 3
    rows = [json.loads(line) for line in added.path.read_text().splitlines()]
    assert {" ".join(r["tokens"]): r["tags"] for r in rows} == {t: g for t, g in GOLD.items() if t != SKIPPED}

    from flows.data_cli import send_data_changed

    assert send_data_changed(settings, params.registry.model_name, added).startswith("event flowtune.data.changed sent")

    again, nothing = run_pull(params, settings)
    assert not again.rows and nothing is None and again.already == 3


def test_a_wrong_token_or_a_stopped_studio_is_one_line(studio_settings):
    with pytest.raises(StudioError, match=r"refused the API token.*FLOWTUNE_LABEL_STUDIO_TOKEN"):
        Studio(studio_settings.labelling_url, "f" * 40).find_project("x")
    with pytest.raises(StudioError, match="does not answer"):
        Studio("http://127.0.0.1:1", "f" * 40).find_project("x")
