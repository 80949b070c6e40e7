"""The model card written into every registered version."""

from flows.gate import decide
from flows.lineage import model_card
from tasks.params import load_params
from tests.helpers import ROOT


def test_model_card_reports_data_training_scores_gate_and_limits() -> None:
    params = load_params(ROOT / "params.yaml")
    metrics = {"f1": 0.5, "precision": 0.6, "recall": 0.43, "f1_default": 0.52, "sentences": 286,
               "per_type": {"person": {"precision": 0.7, "recall": 0.5, "f1": 0.5833, "support": 40}},
               "behaviour": {"name_invariance": {"cases": 30, "passed": 27, "pass_rate": 0.9}},
               "latency": {"p50_ms": 9.1, "p95_ms": 14.2, "device": "cpu"}}
    lineage = {"metrics": metrics, "training": {"train_sentences": 4105, "epochs_run": 6, "best_epoch": 6,
                                                "device": "cpu", "train_seconds": 1000.0},
               "git": {"commit": "abc123"}, "flow_run": {"url": "http://ui/runs/flow-run/1"},
               "gate": {"reasons": decide({"f1": 0.5}, None, params.gate).reasons}}
    card = model_card(params, lineage)
    assert card.startswith(f"# {params.registry.model_name}: named-entity recognition")
    assert "| person | 0.7000 | 0.5000 | 0.5833 | 40 |" in card
    assert "Entity F1 0.5000 (precision 0.6000, recall 0.4300) on 286 sentences" in card
    assert "- name_invariance: 27/30 passed" in card and "p95 14.2 ms" in card
    assert "candidate strict entity F1 0.5000" in card and "## Intended use and limits" in card
    assert "git abc123" in card and "4105 sentences" in card


def test_a_classifier_card_reports_macro_f1_per_class_and_calibration() -> None:
    params = load_params(ROOT / "params-sentiment.yaml")
    metrics = {"task": "sequence-classification", "f1": 0.71, "precision": 0.72, "recall": 0.70, "accuracy": 0.78,
               "examples": 516, "ece": 0.04,
               "per_class": {"neutral": {"precision": 0.5, "recall": 0.4, "f1": 0.4444, "support": 84}},
               "latency": {"p50_ms": 5.0, "p95_ms": 7.5, "device": "cpu"}}
    lineage = {"metrics": metrics, "training": {"train_sentences": 7326, "epochs_run": 3, "best_epoch": 2,
                                                "device": "cpu", "train_seconds": 600.0},
               "git": {"commit": "abc123"}, "flow_run": {"url": None},
               "gate": {"reasons": decide(metrics, None, params.gate).reasons}}
    card = model_card(params, lineage)
    assert card.startswith(f"# {params.registry.model_name}: text classification")
    assert "pipeline(\"text-classification\"" in card and "| class | precision |" in card
    assert "| neutral | 0.5000 | 0.4000 | 0.4444 | 84 |" in card
    assert "Macro-F1 0.7100 (precision 0.7200, recall 0.7000), accuracy 0.7800 on 516 texts" in card
    assert "expected calibration error 0.0400" in card and "7326 texts" in card and "per text" in card
    assert "candidate macro-F1 0.7100" in card and "Behavioural checks" not in card
