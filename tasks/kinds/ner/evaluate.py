"""NER evaluation: score a saved token classifier on the test split, word level, with seqeval.

The headline metric is strict IOB2 entity F1 (an entity counts only when its type and exact span
match); the `*_default` scores are seqeval's lenient conlleval-style ones, kept for comparison with
papers. Beside the scores, the report holds an entity-type confusion table, F1 by slice (analysis.py),
behavioural pass rates (behaviour.py), latency on this machine and the model's size on disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks.io import atomic_write_text
from tasks.kinds.ner import analysis, behaviour
from tasks.kinds.ner.modeling import predict_tags
from tasks.kinds.ner.params import HEADLINE, UNIT, NerEvaluateParams
from tasks.kinds.ner.records import NerRecord, load_jsonl
from tasks.metrics import Behaviour, EvalReport, Headline, LabelSetMismatch, Latency, latency, model_size_mb
from tasks.params import TOKEN_CLASSIFICATION
from tasks.variants import load_model

TASK = TOKEN_CLASSIFICATION
SUMMARY_ROWS = {"micro avg", "macro avg", "weighted avg"}


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


def evaluate(params: NerEvaluateParams, model_dir: Path, test_path: Path, predictions_path: Path,
             max_length: int, device: str | None = None) -> tuple[EvalReport, list[tuple[str, str]]]:
    """Tag the test split with the saved model: the report (strict entity F1 as the headline, per entity
    type, behaviour, slices), the predictions JSONL and the confusion plot's (gold, predicted) tag pairs."""
    records = load_jsonl(Path(test_path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, AutoModelForTokenClassification, device)
    labels = set(model.config.label2id)
    check_tags(records, labels)

    def tag(sentences: Sequence[Sequence[str]], batch_size: int = params.batch_size, what: str = "") -> list[list[str]]:
        return predict_tags(model, tokenizer, sentences, batch_size, max_length, what)

    started = time.perf_counter()
    predicted = tag([r.tokens for r in records], what=f"evaluate: {Path(model_dir).name} on {Path(test_path).name}")
    batch_seconds = time.perf_counter() - started
    gold = [list(r.tags) for r in records]
    scores = score(gold, predicted)
    checklist = params.checklist
    timed = latency(tag, [r.tokens for r in records][: params.latency_sentences])
    timed.update(batch_size=params.batch_size, device=model.device.type,
                 batch_sentences_per_second=len(records) / batch_seconds if records else None)
    report = EvalReport(
        task=TASK, title="named-entity recognition", predicts="IOB2 entity tags, one per word",
        headline=Headline(name=HEADLINE, value=scores["f1"], precision=scores["precision"],
                          recall=scores["recall"]),
        unit=UNIT, count=scores["sentences"], group="entity type", groups=scores["per_type"],
        behaviour=Behaviour(
            name_invariance=behaviour.name_invariance(records, predicted, tag, checklist.name_type,
                                                      checklist.max_cases, checklist.seed),
            minimum_functionality=behaviour.minimum_functionality(Path(checklist.mft_file), labels, tag)),
        latency=Latency(**timed), model_size_mb=model_size_mb(model_dir),
        confusion=analysis.confusion(gold, predicted), slices=analysis.slices(records, predicted),
        details={key: scores[key] for key in ("f1_default", "precision_default", "recall_default", "token_accuracy")},
    )
    write_predictions(predictions_path, records, predicted)
    return report, [(g, p) for g, row in report.confusion.items() for p, n in row.items() for _ in range(n)]


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
