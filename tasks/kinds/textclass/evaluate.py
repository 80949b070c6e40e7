"""Text-classification evaluation: macro-F1 (the headline), per-class scores, accuracy, confusion,
calibration (ECE), latency; a multi-label classifier (its config says so) is scored label by label.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tasks.kinds.textclass import modeling as textclass
from tasks.kinds.textclass import records as textdata
from tasks.kinds.textclass.params import HEADLINE, UNIT
from tasks.metrics import (
    Calibration,
    EvalReport,
    GroupScore,
    Headline,
    LabelSetMismatch,
    Latency,
    latency,
    model_size_mb,
)
from tasks.params import SEQUENCE_CLASSIFICATION, EvaluateParams
from tasks.progress import Progress
from tasks.variants import load_model

TASK = SEQUENCE_CLASSIFICATION


def evaluate(params: EvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
             max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
    """The sequence-classification evaluation: macro-F1 (the headline), per-class scores, accuracy,
    confusion, calibration (ECE), latency."""
    examples = textdata.load_examples(Path(test_path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, AutoModelForSequenceClassification, device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    unknown = next((e for e in examples if not set(e.labels) <= set(labels)), None)
    if unknown:
        raise LabelSetMismatch(f"example {unknown.id}: label {unknown.label!r} is not a class of the model ({labels}); "
                         "was the model trained with the same classes?")
    multi_label = textclass.is_multi_label(model)

    def classify(texts: Sequence[str], batch_size: int = params.batch_size, what: str = "") -> torch.Tensor:
        encoded, _ = textclass.encode_texts(tokenizer, [textdata.TextExample(str(i), t, "") for i, t in
                                                        enumerate(texts)], max_length)
        if not what:
            return textclass.predict_proba(model, encoded, batch_size, tokenizer.pad_token_id)
        with Progress(f"{what}, texts", len(encoded), "texts") as progress:
            return textclass.predict_proba(model, encoded, batch_size, tokenizer.pad_token_id, progress)

    started = time.perf_counter()
    probabilities = classify([e.text for e in examples],
                             what=f"evaluate: {Path(model_dir).name} on {Path(test_path).name}")
    batch_seconds = time.perf_counter() - started
    metrics = textclass.classification_metrics([e.label for e in examples], probabilities, labels, multi_label)
    timed = latency(classify, [e.text for e in examples][: params.latency_sentences])
    timed.update(batch_size=params.batch_size, device=model.device.type,
                 batch_sentences_per_second=len(examples) / batch_seconds if examples else None)
    report = classifier_report(metrics, Latency(**timed), model_size_mb(model_dir))
    predicted = textclass.predicted_labels(probabilities, labels, multi_label)
    textclass.write_predictions(predictions_path, examples, predicted, probabilities, labels)
    # multi-label: label sets against label sets
    return report, [(e.label or "(none)", p or "(none)") for e, p in zip(examples, predicted, strict=True)]


CLASSIFIER_DETAILS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "multi_label")


def classifier_report(metrics: dict, timed: Latency | None = None, size_mb: float | None = None) -> EvalReport:
    """The report of `textclass.classification_metrics`: macro-F1 as the headline; accuracy (multi-label:
    the exact label-set match), the macro scores and the multi-label micro-F1 as details."""
    multi_label = bool(metrics["multi_label"])
    return EvalReport(
        task=TASK, title="text classification",
        predicts="any number of classes per text, each at probability >= 0.5" if multi_label else "one class per text",
        headline=Headline(name=HEADLINE, value=metrics["f1"], precision=metrics["precision"],
                          recall=metrics["recall"]),
        unit=UNIT, count=metrics["examples"], group="class",
        groups={name: GroupScore(**row) for name, row in metrics["per_class"].items()},
        calibration=Calibration(ece=metrics["ece"]), latency=timed, model_size_mb=size_mb,
        confusion=metrics["confusion"],
        details={key: metrics[key] for key in CLASSIFIER_DETAILS if key in metrics},
    )
