"""The evaluation report (tasks/metrics.py): eval.json written and read back, and eval.json files written
before the report existed (registered versions hold them) read without losing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.metrics import Behaviour, Calibration, EvalReport, GroupScore, Headline, Incomparable, Latency, read_outcome

OLD_FORMAT = Path(__file__).parents[1] / "fixtures" / "eval_json_before_report"


def ner_report() -> EvalReport:
    return EvalReport(
        task="token-classification", title="named-entity recognition", predicts="IOB2 entity tags, one per word",
        headline=Headline(name="strict entity F1", value=0.5, precision=0.6, recall=0.43),
        unit="sentence", count=286, group="entity type",
        groups={"person": GroupScore(precision=0.7, recall=0.5, f1=0.5833, support=40)},
        behaviour=Behaviour(name_invariance={"cases": 4, "passed": 3, "pass_rate": 0.75},
                            minimum_functionality={"cases": 2, "passed": 2, "pass_rate": 1.0, "skipped": 1,
                                                   "failed_ids": []}),
        latency=Latency(sentences=3, p50_ms=9.1, p95_ms=14.2, batch_size=4, device="cpu",
                        batch_sentences_per_second=66.0),
        model_size_mb=91.0, confusion={"person": {"person": 2, "(missed)": 1}},
        slices={"length": {"1-10": {"sentences": 3, "f1": 0.5}}},
        details={"f1_default": 0.52, "token_accuracy": 0.9},
    )


def test_a_report_round_trips_through_eval_json(tmp_path: Path) -> None:
    report = ner_report()
    report.write(tmp_path / "eval.json")
    assert EvalReport.read(tmp_path / "eval.json") == report
    classifier = EvalReport(task="sequence-classification", title="text classification", predicts="one class per text",
                            headline=Headline(name="macro-F1", value=0.7, precision=0.71, recall=0.69),
                            unit="text", count=10, group="class", groups={}, calibration=Calibration(ece=0.05),
                            details={"accuracy": 0.8, "multi_label": False})
    classifier.write(tmp_path / "classifier.json")
    assert EvalReport.read(tmp_path / "classifier.json") == classifier
    assert classifier.behaviour is None and classifier.latency is None


def test_eval_json_keeps_f1_as_the_headline_and_the_details_at_the_top(tmp_path: Path) -> None:
    ner_report().write(tmp_path / "eval.json")
    written = json.loads((tmp_path / "eval.json").read_text())
    # `f1` is what `dvc metrics show/diff` and the README name; the details keep their old keys
    assert (written["f1"], written["precision"], written["recall"]) == (0.5, 0.6, 0.43)
    assert written["headline"] == "strict entity F1" and written["unit"] == "sentence" and written["count"] == 286
    assert written["groups"]["person"] == {"precision": 0.7, "recall": 0.5, "f1": 0.5833, "support": 40}
    assert written["f1_default"] == 0.52 and written["token_accuracy"] == 0.9 and "details" not in written
    assert written["behaviour"]["minimum_functionality"]["skipped"] == 1  # extras of a check are kept
    assert "calibration" not in written  # None: left out
    assert list(written) == sorted(written)  # stable for diffs


def test_a_detail_may_not_shadow_a_field() -> None:
    fields = dict(ner_report())
    with pytest.raises(ValueError, match=r"details \['count'\] would overwrite"):
        EvalReport(**{**fields, "details": {"count": 3}})
    with pytest.raises(ValueError, match="extra"):  # the fields themselves: nothing unknown passes silently
        EvalReport(**fields, f1_default=0.5)


def test_an_old_ner_eval_json_reads_with_nothing_lost() -> None:
    old = json.loads((OLD_FORMAT / "ner.json").read_text())
    report = EvalReport.read(OLD_FORMAT / "ner.json")
    assert report.task == "token-classification" and report.headline.name == "strict entity F1"
    assert (report.headline.value, report.headline.precision, report.headline.recall) == \
        (old["f1"], old["precision"], old["recall"])
    assert (report.unit, report.count, report.group) == ("sentence", old["sentences"], "entity type")
    assert {name: g.model_dump() for name, g in report.groups.items()} == old["per_type"]
    assert report.behaviour is not None and report.behaviour.model_dump() == old["behaviour"]
    assert report.calibration is None
    assert report.latency is not None and report.latency.model_dump() == old["latency"]
    assert report.confusion == old["confusion"] and report.slices == old["slices"]
    assert report.model_size_mb == old["model_size_mb"]
    assert report.details == {k: old[k] for k in ("f1_default", "precision_default", "recall_default",
                                                  "token_accuracy")}
    written = report.model_dump(mode="json")
    renamed = {"per_type": "groups", "sentences": "count"}
    assert {renamed.get(k, k) for k in old} <= set(written)  # every old key has a home


@pytest.mark.parametrize("name", ["textclass.json", "multilabel.json"])
def test_an_old_classifier_eval_json_reads_with_nothing_lost(name: str) -> None:
    old = json.loads((OLD_FORMAT / name).read_text())
    report = EvalReport.read(OLD_FORMAT / name)
    assert report.task == "sequence-classification" and report.headline.name == "macro-F1"
    assert report.headline.value == old["f1"] == old["macro_f1"]
    assert (report.unit, report.count, report.group) == ("text", old["examples"], "class")
    assert {name: g.model_dump() for name, g in report.groups.items()} == old["per_class"]
    assert report.behaviour is None  # a classifier never had behavioural checks
    assert report.calibration == Calibration(ece=old["ece"])
    assert report.confusion == old["confusion"]
    assert report.details["accuracy"] == old["accuracy"] and report.details["multi_label"] is old["multi_label"]
    assert ("any number of classes" in report.predicts) is old["multi_label"]
    assert ("micro_f1" in report.details) is old["multi_label"]
    renamed = {"per_class": "groups", "examples": "count", "ece": "calibration"}
    assert {renamed.get(k, k) for k in old} <= set(report.model_dump(mode="json"))


def test_an_old_ner_eval_json_without_behaviour_has_its_checks_unmeasured() -> None:
    """As before the report: an NER eval.json without `behaviour` fails the gate's behaviour floors."""
    report = EvalReport.model_validate({"f1": 0.5, "precision": 0.5, "recall": 0.5, "sentences": 10, "per_type": {}})
    assert report.behaviour == Behaviour() and report.behaviour.checks() == {}
    assert report.latency is None and report.groups == {}


def test_the_incomparable_outcome_reads_apart_from_a_report(tmp_path: Path) -> None:
    reason = "record t:0: tag 'B-company' is not a label"
    Incomparable(incomparable=reason).write(tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text()) == {"incomparable": reason}
    assert read_outcome(tmp_path / "eval.json") == Incomparable(incomparable=reason)
    with pytest.raises(ValueError, match=r"eval.json: no scores: the model is incomparable \(record t:0"):
        EvalReport.read(tmp_path / "eval.json")
    ner_report().write(tmp_path / "scored.json")
    assert read_outcome(tmp_path / "scored.json") == ner_report()


@pytest.mark.parametrize(("content", "message"), [
    ({"f1": 0.5, "precision": 0.5, "recall": 0.5, "per_type": {}}, "needs 'sentences'"),
    ({"task": "question-answering", "f1": 0.5}, "unknown task 'question-answering'"),
    ({"headline": "F1", "f1": 0.5, "task": "x", "title": "t", "predicts": "y", "unit": "row", "count": 1, "group": "g",
      "groups": {}}, "the headline score needs precision, recall"),
])
def test_a_file_that_is_no_report_is_named(tmp_path: Path, content: dict, message: str) -> None:
    (tmp_path / "eval.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as caught:
        EvalReport.read(tmp_path / "eval.json")
    assert str(tmp_path / "eval.json") in str(caught.value)
