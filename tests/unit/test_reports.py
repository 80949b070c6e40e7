"""The markdown of the evaluation artifacts, for either task kind's report."""

from pathlib import Path

from flows.orchestration.gate import Champion
from flows.orchestration.reports import champion_markdown, evaluation_details
from tasks.metrics import EvalReport, Headline, Latency
from tasks.params import load_params
from tests.helpers import ROOT

LATENCY = Latency(device="cpu", p50_ms=4.0, p95_ms=6.5, batch_size=32, batch_sentences_per_second=210.0)
OLD_FORMAT = Path(__file__).parents[1] / "fixtures" / "eval_json_before_report"


def test_classifier_details_show_accuracy_calibration_and_the_class_confusion() -> None:
    report = EvalReport(
        task="sequence-classification", title="text classification", predicts="one class per text",
        headline=Headline(name="macro-F1", value=0.7, precision=0.71, recall=0.69), unit="text", count=10,
        group="class", groups={}, calibration={"ece": 0.05}, latency=LATENCY, model_size_mb=90.9,
        confusion={"negative": {"negative": 3, "positive": 1}, "positive": {"negative": 1, "positive": 5}},
        details={"accuracy": 0.8})
    text = evaluation_details(report)
    assert "macro-F1 0.7000 (precision 0.7100, recall 0.6900) on 10 texts; the model predicts one class per text" \
        in text
    assert "- accuracy: 0.8000" in text
    assert "expected calibration error 0.0500" in text
    assert "## Class confusion (rows: gold, columns: predicted)" in text
    assert "| negative | 3 | 1 |" in text and "| positive | 1 | 5 |" in text
    assert "p95 6.5 ms per text" in text and "210.0 per second" in text and "90.9 MB" in text
    assert "Behavioural checks" not in text


def test_ner_details_keep_entity_confusion_slices_and_behaviour() -> None:
    report = EvalReport(
        task="token-classification", title="named-entity recognition", predicts="IOB2 entity tags, one per word",
        headline=Headline(name="strict entity F1", value=0.5, precision=0.5, recall=0.5), unit="sentence",
        count=3, group="entity type", groups={},
        confusion={"person": {"person": 2, "(missed)": 1}}, slices={"length": {"1-10": {"sentences": 3, "f1": 0.5}}},
        behaviour={"name_invariance": {"cases": 4, "passed": 3, "pass_rate": 0.75}}, latency=LATENCY,
        model_size_mb=90.9, details={"f1_default": 0.55, "token_accuracy": 0.9})
    text = evaluation_details(report)
    assert "- f1_default: 0.5500" in text and "- token_accuracy: 0.9000" in text
    assert "## Entity type confusion" in text and "| person | 1 | 2 |" in text
    assert "## Scores by length" in text and "| slice | sentences | f1 |" in text
    assert "| 1-10 | 3 | 0.5000 |" in text and "| name_invariance | 4 | 3 | 75.00% |" in text
    assert "per sentence" in text


def test_the_champion_markdown_of_an_old_eval_json() -> None:
    params = load_params(ROOT / "params.yaml")
    report = EvalReport.read(OLD_FORMAT / "ner.json")
    text = champion_markdown(params, "champion", Champion(4, report))
    assert "(v4) on the current test data" in text
    assert f"- strict entity F1 **{report.headline.value:.4f}**" in text
    assert "| entity type | precision | recall | F1 | support |" in text
    assert "| person | 0.3333 | 0.5000 | 0.4000 | 2 |" in text
