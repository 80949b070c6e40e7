"""NER evaluation: score a saved token classifier on the test split, word level, with seqeval.

The headline metric is strict IOB2 entity F1 (an entity counts only when its type and exact span
match); the `*_default` scores are seqeval's lenient conlleval-style ones, kept for comparison with
papers. Beside the scores, the report holds an entity-type confusion table, F1 by slice (error analysis,
below), behavioural pass rates (behavioural checks, below), latency on this machine and the model's size on
disk. (One file for all three: dvc.yaml names a kind's files, the same names for every kind.)
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks.io import atomic_write_text
from tasks.iob import entity_spans
from tasks.kinds.ner.modeling import predict_tags, strict_f1
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
            name_invariance=name_invariance(records, predicted, tag, checklist.name_type,
                                            checklist.max_cases, checklist.seed),
            minimum_functionality=minimum_functionality(Path(checklist.mft_file), labels, tag)),
        latency=Latency(**timed), model_size_mb=model_size_mb(model_dir),
        confusion=confusion(gold, predicted), slices=slices(records, predicted),
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

# ---------------------------------------------------------------- error analysis
# Where a model errs: an entity-type confusion table and F1 by slice (sentence length, data source).
#
# Entities are strict IOB2 spans (type, start, end), as in the headline metric: a predicted entity
# that does not start with B- is no entity.

MISSED = "(missed)"  # a gold entity with no predicted entity on the same span
SPURIOUS = "(spurious)"  # a predicted entity with no gold entity on the same span
LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 40), (41, None))  # words per sentence


def confusion(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Counts of gold type -> predicted type over entity spans; the diagonal is exact hits.

    A gold span without a predicted entity on exactly that span counts as (missed); a predicted
    span without a gold one is a (spurious) row entry. Partial overlaps count as one missed and one
    spurious, as the strict metric sees them.
    """
    table: dict[str, Counter] = {}
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans = {(start, end): kind for kind, start, end in entity_spans(gold_tags)}
        predicted_spans = {(start, end): kind for kind, start, end in entity_spans(predicted_tags)}
        for span, kind in gold_spans.items():
            table.setdefault(kind, Counter())[predicted_spans.get(span, MISSED)] += 1
        for span, kind in predicted_spans.items():
            if span not in gold_spans:
                table.setdefault(SPURIOUS, Counter())[kind] += 1
    return {row: dict(sorted(counts.items())) for row, counts in sorted(table.items())}


def length_bucket(words: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if high is None or words <= high:
            return f"{low}+" if high is None else f"{low}-{high}"
    raise AssertionError("unreachable: the last bucket is open")


def slice_scores(groups: dict[str, list[int]], gold, predicted) -> dict[str, dict]:
    """Strict F1 and sentence count per named group of sentence indices."""
    return {
        name: {"f1": strict_f1([gold[i] for i in members], [predicted[i] for i in members]),
               "sentences": len(members)}
        for name, members in sorted(groups.items())
    }


def slices(records, predicted: Sequence[Sequence[str]]) -> dict[str, dict[str, dict]]:
    """F1 by sentence length in words, and by `meta.source` when the records carry one."""
    gold = [list(r.tags) for r in records]
    predicted = [list(p) for p in predicted]
    by_length: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_length.setdefault(length_bucket(len(record.tokens)), []).append(index)
        if "source" in record.meta:
            by_source.setdefault(str(record.meta["source"]), []).append(index)
    result = {"length": slice_scores(by_length, gold, predicted)}
    if by_source:
        result["source"] = slice_scores(by_source, gold, predicted)
    return result

# ---------------------------------------------------------------- behavioural checks
# Behavioural checks in the CheckList style (Ribeiro et al., 2020), as pass rates.
#
# - Name invariance, generated from the test data: in each test sentence that mentions a name (an
#   entity of `evaluate.checklist.name_type`), swap it for another name of the test set with the same
#   number of words. The entity's tags stay put, so the model's predicted tags must not change at all.
# - Minimum functionality: short handwritten sentences (`evaluate.checklist.mft_file`, JSONL like the
#   data) that any usable model must tag exactly. Cases with a tag the model does not know are
#   skipped and counted as such.

Tagger = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def names_by_length(records: Sequence[NerRecord], name_type: str) -> dict[int, list[tuple[str, ...]]]:
    """Distinct surface forms of the name entities, grouped by their number of words (sorted: stable)."""
    names: dict[int, set[tuple[str, ...]]] = {}
    for record in records:
        for kind, start, end in entity_spans(record.tags):
            if kind == name_type:
                names.setdefault(end - start, set()).add(tuple(record.tokens[start:end]))
    return {length: sorted(found) for length, found in names.items()}


def swapped_names(
    records: Sequence[NerRecord], name_type: str, max_cases: int, seed: int
) -> list[tuple[int, list[str]]]:
    """(record index, tokens with its first name swapped for another) for up to max_cases records."""
    pool = names_by_length(records, name_type)
    cases = []
    for index, record in enumerate(records):
        spans = [(start, end) for kind, start, end in entity_spans(record.tags) if kind == name_type]
        if not spans:
            continue
        start, end = spans[0]
        current = tuple(record.tokens[start:end])
        others = [name for name in pool[end - start] if name != current]
        if not others:
            continue
        other = random.Random(f"{seed}:{record.id}").choice(others)
        cases.append((index, [*record.tokens[:start], *other, *record.tokens[end:]]))
        if len(cases) == max_cases:
            break
    return cases


def rate(passed: int, cases: int, **extra) -> dict:
    return {"cases": cases, "passed": passed, "pass_rate": passed / cases if cases else None, **extra}


def name_invariance(records: Sequence[NerRecord], predicted: Sequence[Sequence[str]], tag: Tagger,
                    name_type: str, max_cases: int, seed: int) -> dict:
    """Share of name swaps after which the model predicts exactly the same tags."""
    cases = swapped_names(records, name_type, max_cases, seed)
    again = tag([tokens for _, tokens in cases]) if cases else []
    passed = sum(list(predicted[index]) == list(tags) for (index, _), tags in zip(cases, again, strict=True))
    return rate(passed, len(cases))


def minimum_functionality(path: Path, labels: set[str], tag: Tagger) -> dict:
    """Share of the handwritten sentences the model tags exactly (unknown-label cases skipped)."""
    cases = [r for r in load_jsonl(path) if set(r.tags) <= labels]
    skipped = len(load_jsonl(path)) - len(cases)
    predicted = tag([r.tokens for r in cases]) if cases else []
    failures = [r.id for r, tags in zip(cases, predicted, strict=True) if list(r.tags) != list(tags)]
    return rate(len(cases) - len(failures), len(cases), skipped=skipped, failed_ids=failures)
