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
