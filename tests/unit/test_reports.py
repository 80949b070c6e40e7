"""The markdown of the evaluation artifacts, for either task."""

from flows.reports import evaluation_details

LATENCY = {"device": "cpu", "p50_ms": 4.0, "p95_ms": 6.5, "batch_size": 32, "batch_sentences_per_second": 210.0}


def test_classifier_details_show_accuracy_calibration_and_the_class_confusion() -> None:
    metrics = {"task": "sequence-classification", "f1": 0.7, "precision": 0.71, "recall": 0.69, "accuracy": 0.8,
               "examples": 10, "ece": 0.05, "latency": LATENCY, "model_size_mb": 90.9,
               "confusion": {"negative": {"negative": 3, "positive": 1}, "positive": {"negative": 1, "positive": 5}}}
    text = evaluation_details(metrics)
    assert "macro-F1 0.7000 (precision 0.7100, recall 0.6900); accuracy 0.8000 on 10 texts" in text
    assert "expected calibration error 0.0500" in text
    assert "## Class confusion (rows: gold, columns: predicted)" in text
    assert "| negative | 3 | 1 |" in text and "| positive | 1 | 5 |" in text
    assert "p95 6.5 ms per text" in text and "210.0 per second" in text and "90.9 MB" in text


def test_ner_details_keep_entity_confusion_slices_and_behaviour() -> None:
    metrics = {"f1": 0.5, "f1_default": 0.55, "precision_default": 0.6, "recall_default": 0.5, "token_accuracy": 0.9,
               "sentences": 3, "confusion": {"person": {"person": 2, "(missed)": 1}},
               "slices": {"length": {"1-10": {"sentences": 3, "f1": 0.5}}},
               "behaviour": {"name_invariance": {"cases": 4, "passed": 3, "pass_rate": 0.75}},
               "latency": LATENCY, "model_size_mb": 90.9}
    text = evaluation_details(metrics)
    assert "## Entity confusion" in text and "| person | 1 | 2 |" in text
    assert "| 1-10 | 3 | 0.5000 |" in text and "| name_invariance | 4 | 3 | 75.00% |" in text
    assert "per sentence" in text
