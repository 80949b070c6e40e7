"""Evaluate step: score the trained model on the test split, word level, with seqeval.

The headline metric is strict IOB2 entity F1 (an entity counts only when its type and exact span
match); the `*_default` scores are seqeval's lenient conlleval-style ones, kept for comparison with
papers. Beside the scores, eval.json holds an entity-type confusion table, F1 by slice, behavioural
pass rates (tasks/behaviour.py), latency on this machine and the model's size on disk.

With `task: sequence-classification` the same step scores a text classifier (`run_classifier`).
Either way eval.json is a `tasks.metrics.EvalReport`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks import analysis, behaviour
from tasks.metrics import Behaviour, Calibration, EvalReport, GroupScore, Headline, Incomparable, Latency
from tasks.modeling import predict_tags
from tasks.params import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, EvaluateParams, Params, ParamsError
from tasks.records import NerRecord, atomic_write_text, load_jsonl
from tasks.stage import run_stage

SUMMARY_ROWS = {"micro avg", "macro avg", "weighted avg"}


class LabelSetMismatch(ValueError):
    """The test data holds a tag or class the model does not know: the model cannot be scored on it (a
    champion trained on another label set is *incomparable*, not worse)."""


def check_tags(records: Sequence[NerRecord], labels: set[str]) -> None:
    """Fail with the record id when a gold tag is unknown to the model (it could never be predicted)."""
    for record in records:
        unknown = sorted(set(record.tags) - labels)
        if unknown:
            raise LabelSetMismatch(
                f"record {record.id}: tag {unknown[0]!r} is not a label of the model ({sorted(labels)}); "
                "was the model trained with the same entity types?"
            )


def score(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Strict IOB2 entity metrics (overall micro + per type), lenient F1 and token accuracy."""
    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    report = classification_report(
        gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        entity: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for entity, row in sorted(report.items())
        if entity not in SUMMARY_ROWS
    }
    pairs = [(g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)]
    return {
        "f1": float(micro["f1-score"]),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1_default": float(f1_score(gold, predicted, zero_division=0)),
        "precision_default": float(precision_score(gold, predicted, zero_division=0)),
        "recall_default": float(recall_score(gold, predicted, zero_division=0)),
        "token_accuracy": sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0,
        "sentences": len(gold),
        "per_type": per_type,
    }


def run(
    params: EvaluateParams,
    model_dir: Path,
    test_path: Path,
    metrics_path: Path,
    predictions_path: Path,
    max_length: int,
    confusion_path: Path | None = None,
    task: str = TOKEN_CLASSIFICATION,
) -> EvalReport:
    """Predict the test split with the saved model, write the report (eval.json), predictions JSONL and
    (with `confusion_path`) the gold/predicted pairs of the confusion plot."""
    if task == SEQUENCE_CLASSIFICATION:
        return run_classifier(params, model_dir, test_path, metrics_path, predictions_path, max_length,
                              confusion_path)
    records = load_jsonl(Path(test_path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    labels = set(model.config.label2id)
    check_tags(records, labels)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    def tag(sentences: Sequence[Sequence[str]], batch_size: int = params.batch_size) -> list[list[str]]:
        return predict_tags(model, tokenizer, sentences, batch_size, max_length)

    started = time.perf_counter()
    predicted = tag([r.tokens for r in records])
    batch_seconds = time.perf_counter() - started
    gold = [list(r.tags) for r in records]
    scores = score(gold, predicted)
    checklist = params.checklist
    timed = latency(tag, [r.tokens for r in records][: params.latency_sentences])
    timed.update(batch_size=params.batch_size, device=model.device.type,
                 batch_sentences_per_second=len(records) / batch_seconds if records else None)
    report = EvalReport(
        task=TOKEN_CLASSIFICATION, title="named-entity recognition", predicts="IOB2 entity tags, one per word",
        headline=Headline(name="strict entity F1", value=scores["f1"], precision=scores["precision"],
                          recall=scores["recall"]),
        unit="sentence", count=scores["sentences"], group="entity type", groups=scores["per_type"],
        behaviour=Behaviour(
            name_invariance=behaviour.name_invariance(records, predicted, tag, checklist.name_type,
                                                      checklist.max_cases, checklist.seed),
            minimum_functionality=behaviour.minimum_functionality(Path(checklist.mft_file), labels, tag)),
        latency=Latency(**timed), model_size_mb=model_size_mb(model_dir),
        confusion=analysis.confusion(gold, predicted), slices=analysis.slices(records, predicted),
        details={key: scores[key] for key in ("f1_default", "precision_default", "recall_default", "token_accuracy")},
    )
    write_predictions(predictions_path, records, predicted)
    if confusion_path:
        write_confusion_plot(confusion_path, [(g, p) for g, row in report.confusion.items() for p, n in row.items()
                                              for _ in range(n)])
    report.write(metrics_path)
    return report


def run_classifier(params: EvaluateParams, model_dir: Path, test_path: Path, metrics_path: Path,
                   predictions_path: Path, max_length: int, confusion_path: Path | None) -> EvalReport:
    """The sequence-classification evaluation: macro-F1 (the headline), per-class scores, accuracy,
    confusion, calibration (ECE), latency."""
    from transformers import AutoModelForSequenceClassification

    from tasks import textclass, textdata

    examples = textdata.load_examples(Path(test_path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    unknown = next((e for e in examples if not set(e.labels) <= set(labels)), None)
    if unknown:
        raise LabelSetMismatch(f"example {unknown.id}: label {unknown.label!r} is not a class of the model ({labels}); "
                         "was the model trained with the same classes?")
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    multi_label = textclass.is_multi_label(model)

    def classify(texts: Sequence[str], batch_size: int = params.batch_size) -> torch.Tensor:
        encoded, _ = textclass.encode_texts(tokenizer, [textdata.TextExample(str(i), t, "") for i, t in
                                                        enumerate(texts)], max_length)
        return textclass.predict_proba(model, encoded, batch_size, tokenizer.pad_token_id)

    started = time.perf_counter()
    probabilities = classify([e.text for e in examples])
    batch_seconds = time.perf_counter() - started
    metrics = textclass.classification_metrics([e.label for e in examples], probabilities, labels, multi_label)
    timed = latency(classify, [e.text for e in examples][: params.latency_sentences])
    timed.update(batch_size=params.batch_size, device=model.device.type,
                 batch_sentences_per_second=len(examples) / batch_seconds if examples else None)
    report = classifier_report(metrics, Latency(**timed), model_size_mb(model_dir))
    predicted = textclass.predicted_labels(probabilities, labels, multi_label)
    textclass.write_predictions(predictions_path, examples, predicted, probabilities, labels)
    if confusion_path:  # multi-label: label sets against label sets
        write_confusion_plot(confusion_path, [(e.label or "(none)", p or "(none)")
                                              for e, p in zip(examples, predicted, strict=True)])
    report.write(metrics_path)
    return report


CLASSIFIER_DETAILS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "multi_label")


def classifier_report(metrics: dict, timed: Latency | None = None, size_mb: float | None = None) -> EvalReport:
    """The report of `textclass.classification_metrics`: macro-F1 as the headline; accuracy (multi-label:
    the exact label-set match), the macro scores and the multi-label micro-F1 as details."""
    multi_label = bool(metrics["multi_label"])
    return EvalReport(
        task=SEQUENCE_CLASSIFICATION, title="text classification",
        predicts="any number of classes per text, each at probability >= 0.5" if multi_label else "one class per text",
        headline=Headline(name="macro-F1", value=metrics["f1"], precision=metrics["precision"],
                          recall=metrics["recall"]),
        unit="text", count=metrics["examples"], group="class",
        groups={name: GroupScore(**row) for name, row in metrics["per_class"].items()},
        calibration=Calibration(ece=metrics["ece"]), latency=timed, model_size_mb=size_mb,
        confusion=metrics["confusion"],
        details={key: metrics[key] for key in CLASSIFIER_DETAILS if key in metrics},
    )


def model_size_mb(model_dir: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file()) / 1e6, 2)


def write_confusion_plot(path: Path, pairs: Sequence[tuple[str, str]]) -> None:
    """One `actual,predicted` row per case, for DVC's confusion template (`dvc plots show`)."""
    rows = "".join(f"{_csv(actual)},{_csv(predicted)}\n" for actual, predicted in pairs)
    atomic_write_text(Path(path), "actual,predicted\n" + rows)


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def latency(tag, sentences: Sequence[Sequence[str]]) -> dict:
    """Milliseconds per sentence at batch 1 (tokenization included), after one warm-up call."""
    if not sentences:
        return {"sentences": 0, "p50_ms": None, "p95_ms": None}
    tag(sentences[:1], 1)
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        tag([sentence], 1)
        times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) > 1 else times[0]
    return {"sentences": len(times), "p50_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2)}


def write_predictions(path: Path, records: Sequence[NerRecord], predicted: Sequence[Sequence[str]]) -> None:
    """JSONL rows `{id, tokens, tags, predicted}`, written atomically."""
    lines = [
        json.dumps(
            {"id": r.id, "tokens": list(r.tokens), "tags": list(r.tags), "predicted": list(tags)},
            ensure_ascii=False,
        )
        for r, tags in zip(records, predicted, strict=True)
    ]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def step(params: Params, args) -> str:
    if args.model_dir:
        if args.out is None:
            raise ParamsError("--model-dir needs --out FILE (where to write its metrics)")
        return score_other_model(params, args.model_dir, args.out)
    paths = params.paths
    report = run(params.evaluate, Path(paths.model), Path(paths.augmented) / "test.jsonl",
                 Path(paths.eval_metrics), Path(paths.predictions), params.train.max_length, Path(paths.confusion),
                 params.task)
    return summary(report)


def summary(report: EvalReport) -> str:
    """One line: the headline score and how many rows it covers."""
    return f"{report.headline.name} {report.headline.value:.4f} on {report.count} {report.units}"


def score_other_model(params: Params, model_dir: Path, out: Path) -> str:
    """Score a model that is not this pipeline's output (the registry's champion) on this run's test
    split with this checkout's code, so the gate compares candidate and champion by the same code.

    `out` gets the report, or `{"incomparable": reason}` (`tasks.metrics.Incomparable`) when the model's
    labels differ from the data's; predictions go beside it. Any other error fails the command.
    """
    try:
        report = run(params.evaluate, model_dir, Path(params.paths.augmented) / "test.jsonl", out,
                     out.with_name(out.stem + "-predictions.jsonl"), params.train.max_length, task=params.task)
    except LabelSetMismatch as exc:
        Incomparable(incomparable=str(exc)).write(out)
        return f"incomparable: {exc}"
    return f"{model_dir}: {summary(report)}"


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", type=Path, help="score this model folder instead of the pipeline's "
                        "(written to --out, not to the pipeline's outputs)")
    parser.add_argument("--out", type=Path, help="with --model-dir: the metrics file to write")


def main(argv: list[str] | None = None) -> None:
    run_stage("evaluate", step, argv, add_arguments=add_arguments)


if __name__ == "__main__":
    main()
