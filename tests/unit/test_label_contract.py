"""`label pull` runs the data contract before anything is written (a breaking task is refused by id, the rest
imported, a refused task pulled once fixed), and `label push --review` queues the label audit's suspects in a
review project of their own. An in-memory Label Studio (tests/unit/test_labelling.py's FakeStudio) stands in for
the HTTP client; tests/integration/test_labelling_loop.py runs the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.cli.main import main
from flows.labelling import rounds
from flows.labelling.checks import contract_refusals, record_of
from flows.labelling.loop import REVIEW_NOTE, review_candidates, review_title, write_batch
from flows.labelling.selection import text_key
from tasks import ingest
from tasks.contract import ContractError, Outcome
from tasks.kinds import kind_for
from tasks.params import load_params
from tests.helpers import ROOT
from tests.unit.test_labelling import FakeStudio

DEV = ["Carol", "sings", "loudly"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A scratch checkout: NER person/loc, source data/external/mine (one file), a raw dev split holding DEV, no
    Prefect API and no tokenizer to load (max_subword_pieces null)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"]["labels"] = ["person", "loc"]
    params["ingest"]["source"] = "data/external/mine"
    params["paths"]["raw"] = "data/raw"
    params["validate"] |= {"max_subword_pieces": None, "reference_profile": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    source = tmp_path / "data" / "external" / "mine"
    source.mkdir(parents=True)
    (source / "first.jsonl").write_text(json.dumps({"tokens": ["Alice", "runs"], "tags": ["B-person", "O"]}) + "\n")
    (tmp_path / "data" / "raw").mkdir()
    (tmp_path / "data" / "raw" / "dev.jsonl").write_text(
        json.dumps({"id": "dev.conll:7", "tokens": DEV, "tags": ["B-person", "O", "O"]}) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    return tmp_path


def task(task_id: int, text: str, *spans: tuple[int, int, str]) -> dict:
    result = [{"from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]}} for s, e, label in spans]
    return {"id": task_id, "data": {"text": text, "key": text_key(text)}, "annotations": [{"result": result}]}


@pytest.fixture
def studio(monkeypatch) -> FakeStudio:
    fake = FakeStudio()
    project, _ = fake.ensure_project(f"flowtune-{load_params(str(ROOT / 'params.yaml')).registry.model_name}", "")
    monkeypatch.setattr(rounds, "studio", lambda settings: fake)
    fake.project_id = project["id"]
    return fake


@pytest.fixture
def events(monkeypatch) -> list:
    sent: list = []
    monkeypatch.setattr("flows.batches.send_data_changed", lambda settings, model, added: sent.append(added) or "sent")
    return sent


def batches(project: Path) -> list[Path]:
    return sorted((project / "data" / "external" / "mine" / "batches").glob("*.jsonl"))


def test_a_breaking_task_is_refused_by_id_and_the_rest_is_imported(project, studio, events, capsys):
    studio.tasks[studio.project_id] = [
        task(1, "Bob met Eve", (0, 3, "person"), (8, 11, "person")),
        task(2, "Dan  met Ann", (0, 3, "person")),  # two spaces: an empty token
        task(3, "Zed\u200b sang", (0, 4, "person")),  # a zero-width space: an invisible character
        task(4, "carol  SINGS loudly", (0, 5, "person")),  # the dev sentence, case and spacing aside
    ]
    assert main(["label", "pull"]) == 0
    err = capsys.readouterr().err
    assert "refused task 2: breaks the data contract's token_not_blank check (token 1 '': token_blank=True); " \
           "expected no empty or blank token" in err
    assert "refused task 3: breaks the data contract's no_control_characters check" in err
    assert "refused task 4: breaks the data contract's no_leakage check (repeats the dev row dev.conll:7" in err
    assert "stay in Label Studio: fix their annotation (or delete the task)" in err
    [batch] = batches(project)
    assert [json.loads(line)["id"] for line in batch.read_text().splitlines()] == [f"labelstudio-{studio.project_id}-1"]
    assert len(events) == 1


def test_a_pull_that_breaks_the_contract_writes_nothing_and_a_fixed_task_comes_next_time(project, studio, events,
                                                                                         capsys):
    studio.tasks[studio.project_id] = [task(5, "Dan  met Ann", (0, 3, "person"), (9, 12, "person"))]
    assert main(["label", "pull"]) == 0
    captured = capsys.readouterr()
    assert "refused task 5: breaks the data contract's token_not_blank check" in captured.err
    assert "0 new labelled rows; 1 refused" in captured.out
    assert batches(project) == [] and events == []
    studio.tasks[studio.project_id] = [task(5, "Dan met Ann", (0, 3, "person"), (8, 11, "person"))]  # fixed
    assert main(["label", "pull"]) == 0
    assert "1 new labelled rows; 0 refused" in capsys.readouterr().out
    [batch] = batches(project)
    assert json.loads(batch.read_text())["tags"] == ["B-person", "O", "B-person"] and len(events) == 1
    assert main(["label", "pull"]) == 0 and "0 new labelled rows; 0 refused, 0 empty submissions skipped, " \
        "1 imported before" in capsys.readouterr().out and len(events) == 1


def test_every_row_with_a_bad_token_is_named_not_just_the_first_five(project, tmp_path):
    params = load_params("params.yaml")
    rows = [{"id": f"labelstudio-3-{i}", "tokens": ["Eve", "", f"w{i % 2}"], "tags": ["B-person", "O", "O"]}
            for i in range(30)] + [{"id": "labelstudio-3-99", "tokens": ["fine"], "tags": ["O"]}]
    batch = write_batch(rows, tmp_path, 3, params)
    refused = contract_refusals(batch, params, kind_for(params), {row["id"]: i for i, row in enumerate(rows)})
    assert sorted(refused) == list(range(30))  # same (token, tag) pairs: the token table names each once per round


def test_a_failure_that_names_no_task_refuses_the_whole_pull(project, tmp_path, monkeypatch):
    params = load_params("params.yaml")
    batch = write_batch([{"id": "labelstudio-3-1", "tokens": ["a"], "tags": ["O"]}], tmp_path, 3, params)
    failed = Outcome("iob2_valid", "sentences", "expect_column_values_to_be_in_set", "iob2_problem", False,
                     "1 unexpected of 1 rows", "value_set=['']", 1, ["somewhere-else:1: iob2_problem='x'"])
    monkeypatch.setattr("flows.labelling.checks.run_contract", lambda tables, examples: [failed])
    with pytest.raises(ContractError, match="no task can be named: - iob2_valid"):
        contract_refusals(batch, params, kind_for(params), {"labelstudio-3-1": 1})


def test_an_example_names_its_record():
    ids = ["labelstudio-7-1", "labelstudio-7-12", "train.conll:3"]
    assert record_of("labelstudio-7-12", ids) == "labelstudio-7-12"
    assert record_of("labelstudio-7-12 token 2 'x': token='x'", ids) == "labelstudio-7-12"
    assert record_of("labelstudio-7-1: n_tokens=0", ids) == "labelstudio-7-1"
    assert record_of("train.conll:3: n_tokens=0", ids) == "train.conll:3"
    assert record_of("labelstudio-7-123", ids) is None and record_of("train.conll:30", ids) is None


# ---------------------------------------------------------------- push --review

NER_ITEMS = [
    {"id": "train.conll:10", "tokens": ["Alice", "met", "Bob"], "given": ["O", "O", "B-person"],
     "suggested": ["B-person", "O", "B-person"], "score": 0.0123},
    {"id": "train.conll:20", "tokens": ["in", "Paris"], "given": ["O", "B-person"], "suggested": ["O", "B-loc"],
     "score": 0.2},
]


def test_review_tasks_carry_the_current_label_and_the_suspicion(project, studio, tmp_path, capsys):
    report = tmp_path / "audit.json"
    report.write_text(json.dumps({"summary": {}, "top": NER_ITEMS}))
    assert main(["label", "push", "--review", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    params = load_params("params.yaml")
    title = review_title(params)
    assert f"review project {title!r} created: 2 of the audit's 2 suspect rows" in out
    review = studio.projects[title]
    assert review["id"] != studio.project_id and studio.tasks.get(studio.project_id) is None  # its own queue
    assert review["label_config"].startswith(f'<View><Header value="${REVIEW_NOTE}"/><Labels name="label"')
    first = studio.tasks[review["id"]][0]
    assert first["data"]["flowtune_id"] == "train.conll:10" and first["data"]["text"] == "Alice met Bob"
    assert [r["value"]["text"] for r in first["predictions"][0]["result"]] == ["Bob"]  # the label as it is
    assert first["predictions"][0]["model_version"] == "current label"
    assert first["predictions"][0]["score"] == pytest.approx(0.0123)
    note = first["data"][REVIEW_NOTE]
    assert "rank 1 of 2" in note and "quality 0.012" in note and "'Alice' person, 'Bob' person" in note
    assert main(["label", "push", "--review", "--report", str(report)]) == 0  # again: nothing queued twice
    assert "review project" in (out := capsys.readouterr().out) and "0 of the audit's 2" in out and "2 already" in out
    assert len(studio.tasks[review["id"]]) == 2


def test_a_classifier_review_task_pre_annotates_the_given_class():
    [candidate], review = review_candidates([{"id": "t1", "text": "great film", "given": "negative",
                                              "suggested": "positive", "score": 0.05}])
    assert candidate.answer == {"label": "negative"} and candidate.item == "great film"
    assert "suggest: positive" in review["t1"][REVIEW_NOTE] and review["t1"]["suggested"] == "positive"


def test_review_without_a_report_is_one_line(project, studio, capsys):
    assert main(["label", "push", "--review", "--report", "nowhere.json"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.json: no label audit report (run `flowtune label audit` first" in err
    (project / "bad.json").write_text(json.dumps({"top": [{"id": "x"}]}))
    assert main(["label", "push", "--review", "--report", "bad.json"]) == 1
    assert "bad.json: not a label audit report" in capsys.readouterr().err


def annotate_review(studio: FakeStudio, title: str, *results: list[dict]) -> list[dict]:
    """Give the review project's tasks ids and one annotation each (in push order)."""
    tasks = studio.tasks[studio.projects[title]["id"]]
    for number, (queued, result) in enumerate(zip(tasks, results, strict=True), 1):
        queued["id"] = 500 + number
        queued["annotations"] = [{"result": result}]
    return tasks


def loc(start: int, end: int, label: str) -> dict:
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "labels": [label]}}


def raw_row(project: Path, record_id: str) -> dict:
    params = load_params("params.yaml")
    ingest.run(params.ingest, project / "raw", kind_for(params))
    rows = [json.loads(line) for split in ("train", "dev", "test")
            for line in (project / "raw" / f"{split}.jsonl").read_text().splitlines()]
    return next(row for row in rows if row["id"] == record_id)


def test_review_corrections_come_back_as_replacements_by_id_never_duplicates(project, studio, events, capsys):
    (project / "audit.json").write_text(json.dumps({"top": [
        {"id": "first.jsonl:1", "tokens": ["Alice", "runs"], "given": ["B-person", "O"], "suggested": ["B-loc", "O"],
         "score": 0.01}]}))
    assert main(["label", "push", "--review", "--report", "audit.json"]) == 0
    annotate_review(studio, review_title(load_params("params.yaml")), [loc(0, 5, "loc")])
    assert main(["label", "pull", "--review"]) == 0
    out = capsys.readouterr().out
    assert "1 labels corrected; 0 unchanged" in out
    assert "ingest replaces those rows by id (delete the file to undo)" in out
    [fix] = sorted((project / "data" / "external" / "mine" / "corrections").glob("labelstudio-review-*.jsonl"))
    assert json.loads(fix.read_text()) == {"id": "first.jsonl:1", "tokens": ["Alice", "runs"], "tags": ["B-loc", "O"]}
    assert len(events) == 1 and batches(project) == []  # no new row: a replacement
    assert raw_row(project, "first.jsonl:1")["tags"] == ["B-loc", "O"]
    report = json.loads((project / "raw" / "ingest_report.json").read_text())
    assert report["sentences"] == 1 and report["corrections"] == [
        {"file": f"corrections/{fix.name}", "rows": 1, "applied": 1, "stale": []}]

    assert main(["label", "pull", "--review"]) == 0  # again: the label is the corrected one, nothing written
    assert "0 labels corrected; 1 unchanged" in capsys.readouterr().out and len(events) == 1
    fix.unlink()  # undo
    assert raw_row(project, "first.jsonl:1")["tags"] == ["B-person", "O"]


def test_a_confirmed_label_writes_nothing_and_a_breaking_correction_is_refused(project, studio, events, capsys):
    (project / "audit.json").write_text(json.dumps({"top": [
        {"id": "first.jsonl:1", "tokens": ["Alice", "runs"], "given": ["B-person", "O"], "suggested": ["B-loc", "O"],
         "score": 0.01},
        {"id": "x:1", "tokens": ["a", "", "b"], "given": ["O", "O", "O"], "suggested": ["O", "O", "O"], "score": 0.3},
        {"id": "x:2", "tokens": ["in", "New York"], "given": ["O", "O"], "suggested": ["O", "B-loc"], "score": 0.4}]}))
    assert main(["label", "push", "--review", "--report", "audit.json"]) == 0
    annotate_review(studio, review_title(load_params("params.yaml")), [loc(0, 5, "person")], [loc(0, 1, "loc")],
                    [loc(3, 11, "loc")])
    assert main(["label", "pull", "--review"]) == 0
    captured = capsys.readouterr()
    assert "0 labels corrected; 1 unchanged" in captured.out and "2 refused" in captured.out
    assert "refused task 502: breaks the data contract's token_not_blank check (token 1 '': token_blank=True)" \
        in captured.err
    assert "refused task 503: its row's tokens ['in', 'New York'] do not survive as Label Studio's text" in captured.err
    assert not (project / "data" / "external" / "mine" / "corrections").exists() and events == []


def test_ingest_reports_a_stale_correction_and_leaves_the_row(project):
    fixes = project / "data" / "external" / "mine" / "corrections"
    fixes.mkdir()
    (fixes / "old.jsonl").write_text(json.dumps({"id": "first.jsonl:1", "tokens": ["Bob", "runs"],
                                                 "tags": ["B-loc", "O"]}) + "\n")
    assert raw_row(project, "first.jsonl:1")["tags"] == ["B-person", "O"]
    report = json.loads((project / "raw" / "ingest_report.json").read_text())
    assert report["corrections"] == [{"file": "corrections/old.jsonl", "rows": 1, "applied": 0,
                                      "stale": ["first.jsonl:1"]}]


def test_a_classifier_row_breaking_the_contract_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params("params-sentiment.yaml")
    params = params.model_copy(update={"validate_": params.validate_.model_copy(update={"max_subword_pieces": None})})
    rows = [{"id": "labelstudio-2-1", "text": "a fine film", "label": "positive"},
            {"id": "labelstudio-2-2", "text": "odd\u200bthing", "label": "neutral"},
            {"id": "labelstudio-2-3", "text": "meh", "label": "bored"}]
    batch = write_batch(rows, tmp_path, 2, params)
    refused = contract_refusals(batch, params, kind_for(params), {row["id"]: i for i, row in enumerate(rows, 1)})
    assert sorted(refused) == [2, 3]
    assert "no_control_characters" in refused[2] and "label_in_set" in refused[3] and "a class of task.labels" in \
        refused[3]
