"""Text classification (one label per text) on the same machinery as NER: data, metrics, fine-tuning.

- Data: `TextExample`s (tasks/textdata.py: CSV/JSONL reading, cleaning, the contract's tables).
- Metrics (pure functions): accuracy, per-class and macro precision/recall/F1, a confusion table and
  the expected calibration error of the predicted class's probability.
- Training: `AutoModelForSequenceClassification` on `tasks.engine` (the same loop as NER: length-grouped
  dynamic padding, accumulation, AMP on GPU, DDP, checkpoints, early stopping), selecting the epoch by
  dev macro-F1. A text longer than `max_length` pieces is truncated (a sequence classifier sees one
  window); `fit` reports how many were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from tasks import checkpoints, engine
from tasks.modeling import Example, autocast, collate, model_device, resolve_base_model
from tasks.records import atomic_write_text, write_json
from tasks.textdata import TextExample, load_examples

# ---------------------------------------------------------------- metrics


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 (with support), and a gold x predicted table.

    Macro averages weigh every class in `labels` equally, including classes absent from `gold` (their
    recall is 0 by convention here, as in scikit-learn's `zero_division=0`).
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    per_class = {}
    for label in labels:
        true_positive = confusion[label][label]
        predicted_as = sum(confusion[g][label] for g in labels)
        support = sum(confusion[label].values())
        precision, recall = _ratio(true_positive, predicted_as), _ratio(true_positive, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    macro = {k: sum(c[k] for c in per_class.values()) / len(labels) for k in ("precision", "recall", "f1")}
    correct = sum(confusion[label][label] for label in labels)
    return {"accuracy": _ratio(correct, len(gold)), "macro_precision": macro["precision"],
            "macro_recall": macro["recall"], "macro_f1": macro["f1"], "per_class": per_class,
            "confusion": confusion, "examples": len(gold)}


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the bins' sizes.

    0 for a perfectly calibrated model; a model that says 0.9 and is right half the time scores 0.4.
    """
    if not confidence:
        return 0.0
    total, error = len(confidence), 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if low < c <= high or (b == 0 and c == 0.0)]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            mean_confidence = sum(confidence[i] for i in members) / len(members)
            error += len(members) / total * abs(accuracy - mean_confidence)
    return error


# ---------------------------------------------------------------- model


def encode_texts(tokenizer, examples: Sequence[TextExample], max_length: int,
                 label2id: dict[str, int] | None = None) -> tuple[list[Example], int]:
    """Engine examples (the label in position 0 of `labels`) and how many texts were truncated."""
    encoded = tokenizer([e.text for e in examples], truncation=False, add_special_tokens=True)["input_ids"]
    rows, truncated = [], 0
    for index, (example, ids) in enumerate(zip(examples, encoded, strict=True)):
        if len(ids) > max_length:
            truncated += 1
            ids = ids[: max_length - 1] + ids[-1:]  # keep the closing special token
        labels = [label2id[example.label]] if label2id is not None else None
        rows.append(Example(index, list(ids), [], labels))
    return rows, truncated


def load_classifier(params, labels: list[str]):
    """The base encoder with a fresh sequence-classification head for `labels`, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_base_model(params.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, hidden_dropout_prob=params.dropout,
        attention_probs_dropout_prob=params.dropout, ignore_mismatched_sizes=True)
    return model, AutoTokenizer.from_pretrained(base)


def predict_proba(model: torch.nn.Module, examples: Sequence[Example], batch_size: int, pad_id: int) -> torch.Tensor:
    """Class probabilities, one row per example, in the examples' order."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[torch.Tensor | None] = [None] * len(examples)
    was_training, device = model.training, model_device(model)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate([examples[i] for i in chosen], pad_id).items()
                         if k != "labels"}
                with autocast(device):
                    probabilities = model(**batch).logits.float().softmax(dim=-1).cpu()
                for i, row in zip(chosen, probabilities, strict=True):
                    rows[i] = row
    finally:
        model.train(was_training)
    return torch.stack(rows) if rows else torch.empty(0)  # type: ignore[arg-type]


def evaluate(model, examples: Sequence[Example], gold: Sequence[str], labels: list[str], batch_size: int,
             pad_id: int) -> dict:
    """`classification_metrics` of the model's predictions for encoded examples."""
    return classification_metrics(gold, predict_proba(model, examples, batch_size, pad_id), labels)


def classification_metrics(gold: Sequence[str], probabilities: torch.Tensor, labels: list[str]) -> dict:
    """`scores` of the most probable classes, the expected calibration error of their probability,
    and `f1`: the headline score (macro-F1) that the gate and the registry read for either task."""
    confidence, best = probabilities.max(dim=-1) if len(gold) else (torch.empty(0), torch.empty(0, dtype=torch.long))
    predicted = [labels[i] for i in best.tolist()]
    result = scores(gold, predicted, labels)
    result["ece"] = expected_calibration_error(confidence.tolist(), [p == g for p, g in zip(predicted, gold,
                                                                                            strict=True)])
    return {"task": "sequence-classification", "f1": result["macro_f1"], "precision": result["macro_precision"],
            "recall": result["macro_recall"], **result}


def write_predictions(path: Path, examples: Sequence[TextExample], predicted: Sequence[str],
                      probabilities: torch.Tensor, labels: Sequence[str]) -> None:
    """JSONL rows `{id, text, label, predicted, probabilities}`, written atomically."""
    rows = [json.dumps({"id": e.id, "text": e.text, "label": e.label, "predicted": p,
                        "probabilities": {label: round(float(x), 6) for label, x in zip(labels, row, strict=True)}},
                       ensure_ascii=False) for e, p, row in zip(examples, predicted, probabilities, strict=True)]
    atomic_write_text(Path(path), "".join(row + "\n" for row in rows))


def fit(params, labels: list[str], data_dir: Path, model_dir: Path, metrics_path: Path, curve_path: Path,
        checkpoint_dir: Path | None = None) -> dict:
    """Fine-tune on data_dir/train.jsonl, keep the epoch with the best dev macro-F1, save it; the metrics."""
    from tasks.train import plain_model, save_model, seed_everything, threads_per_process, training_metrics, write_curve

    processes = engine.join_processes()
    try:
        seed_everything(params.seed)
        torch.set_num_threads(threads_per_process(params, processes))
        files = [Path(data_dir) / "train.jsonl", Path(data_dir) / "dev.jsonl"]
        train_set, dev_set = (load_examples(f) for f in files)
        label2id = {label: i for i, label in enumerate(labels)}
        for example in [*train_set, *dev_set]:
            if example.label not in label2id:
                raise ValueError(f"{example.id}: label {example.label!r} is not one of {labels}")
        model, tokenizer = load_classifier(params, labels)
        device = engine.pick_device(processes)
        engine.configure_device(device)
        model.to(device)
        train_examples, truncated = encode_texts(tokenizer, train_set, params.max_length, label2id)
        dev_examples, _ = encode_texts(tokenizer, dev_set, params.max_length)
        per_step = params.batch_size * params.gradient_accumulation_steps * processes.world
        loop = engine.make_loop(model, params, device, processes, tokenizer.pad_token_id,
                                -(-len(train_examples) // per_step) * params.epochs)
        torch.manual_seed(params.seed + processes.rank)

        def dev_macro_f1(trained) -> float | None:
            if not dev_set:
                return None
            gold = [e.label for e in dev_set]
            return evaluate(trained, dev_examples, gold, labels, params.batch_size * 2,
                            tokenizer.pad_token_id)["macro_f1"]

        identity = checkpoints.fingerprint(params, labels, files) + f"/{processes.world}"
        progress = engine.fit(loop, train_examples, dev_macro_f1, checkpoint_dir, identity,
                              checkpoints.load(checkpoint_dir, identity))
        if not processes.main:
            return {}
        model.load_state_dict(loop.best_state)
        save_model(plain_model(model), tokenizer, Path(model_dir))
        metrics = training_metrics(progress, params, device, model, len(train_set), bool(dev_set), processes)
        metrics = {**metrics, "dev_macro_f1": metrics.pop("dev_f1"), "truncated_texts": truncated}
        write_json(Path(metrics_path), metrics)
        write_curve(Path(curve_path), progress.curve)
        checkpoints.clear(checkpoint_dir)
        return metrics
    finally:
        engine.leave_processes()
