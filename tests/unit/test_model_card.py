"""The model card written into every registered version."""

from flows.orchestration.gate import decide
from flows.orchestration.lineage import model_card
from tasks.metrics import EvalReport, Headline, Latency
from tasks.params import load_params
from tests.helpers import ROOT


def lineage_of(report: EvalReport, reasons: list[str], train_sentences: int) -> dict:
    return {"metrics": report.model_dump(mode="json"),
            "training": {"train_sentences": train_sentences, "epochs_run": 6, "best_epoch": 6, "device": "cpu",
                         "train_seconds": 1000.0},
            "git": {"commit": "abc123"}, "flow_run": {"url": "http://ui/runs/flow-run/1"},
            "gate": {"reasons": reasons}}


def test_model_card_reports_data_training_scores_gate_and_limits() -> None:
    params = load_params(ROOT / "params.yaml")
    report = EvalReport(
        task="token-classification", title="named-entity recognition", predicts="IOB2 entity tags, one per word",
        headline=Headline(name="strict entity F1", value=0.5, precision=0.6, recall=0.43), unit="sentence",
        count=286, group="entity type",
        groups={"person": {"precision": 0.7, "recall": 0.5, "f1": 0.5833, "support": 40}},
        behaviour={"name_invariance": {"cases": 30, "passed": 27, "pass_rate": 0.9}},
        latency=Latency(p50_ms=9.1, p95_ms=14.2, device="cpu"), details={"f1_default": 0.52})
    card = model_card(params, lineage_of(report, decide(report, None, params.gate).reasons, 4105))
    assert card.startswith(f"# {params.registry.model_name}: named-entity recognition")
    assert "it predicts IOB2 entity tags, one per word" in card and "flowtune predict --model" in card
    assert "| entity type | precision | recall | F1 | support |" in card
    assert "| person | 0.7000 | 0.5000 | 0.5833 | 40 |" in card
    assert "Strict entity F1 0.5000 (precision 0.6000, recall 0.4300) on 286 sentences. Also: f1_default 0.5200." \
        in card
    assert "- name_invariance: 27/30 passed" in card and "p95 14.2 ms per sentence" in card
    assert "candidate strict entity F1 0.5000" in card and "## Intended use and limits" in card
    assert "Predicts the entity types above" in card
    assert "git abc123" in card and "4105 sentences" in card


def test_a_classifier_card_reports_macro_f1_per_class_and_calibration() -> None:
    params = load_params(ROOT / "params-sentiment.yaml")
    report = EvalReport(
        task="sequence-classification", title="text classification", predicts="one class per text",
        headline=Headline(name="macro-F1", value=0.71, precision=0.72, recall=0.70), unit="text", count=516,
        group="class", groups={"neutral": {"precision": 0.5, "recall": 0.4, "f1": 0.4444, "support": 84}},
        calibration={"ece": 0.04}, latency=Latency(p50_ms=5.0, p95_ms=7.5, device="cpu"),
        details={"accuracy": 0.78, "multi_label": False})
    card = model_card(params, lineage_of(report, decide(report, None, params.gate).reasons, 7326))
    assert card.startswith(f"# {params.registry.model_name}: text classification")
    assert "it predicts one class per text" in card and "| class | precision |" in card
    assert "| neutral | 0.5000 | 0.4000 | 0.4444 | 84 |" in card
    assert "Macro-F1 0.7100 (precision 0.7200, recall 0.7000) on 516 texts; expected calibration error 0.0400. " \
           "Also: accuracy 0.7800, multi_label False." in card
    assert "7326 texts" in card and "per text" in card
    assert "candidate macro-F1 0.7100" in card and "Behavioural checks" not in card


def test_the_card_reads_metrics_registered_before_the_report() -> None:
    """lineage["metrics"] of a version registered before EvalReport (eval.json's old NER layout)."""
    params = load_params(ROOT / "params.yaml")
    old = {"f1": 0.5, "precision": 0.6, "recall": 0.43, "f1_default": 0.52, "sentences": 286,
           "per_type": {"person": {"precision": 0.7, "recall": 0.5, "f1": 0.5833, "support": 40}},
           "latency": {"p50_ms": 9.1, "p95_ms": 14.2, "device": "cpu"}}
    lineage = {**lineage_of(EvalReport.model_validate(old), [], 4105), "metrics": old}
    card = model_card(params, lineage)
    assert "| person | 0.7000 | 0.5000 | 0.5833 | 40 |" in card and "on 286 sentences" in card
