"""Label audit: rank the train split's rows by how likely their labels are wrong (`flowtune label audit`).

A model scores its own training rows too kindly (it has learned their labels, errors included), so every row
gets its probabilities from a model that never saw it: k-fold cross-fitting, k models each trained on k-1
folds of the cleaned train split (`label.audit_folds`, `label.audit_epochs`; the train section otherwise as
it is). The kind then ranks the rows with cleanlab (tasks/kinds/*/audit.py: per-sentence scores for NER, per
text for classifiers) and says what the models would label them instead. Writes `label.audit_report` (JSON:
summary and every row, ranked) and a CSV of the top rows beside it. Not a DVC stage: it changes no result.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks import engine, trainable
from tasks.io import atomic_write_text, write_json
from tasks.kinds import model_kind_for
from tasks.kinds.base import TrainingKind
from tasks.params import Params, TrainParams
from tasks.stage import run_stage
from tasks.trainer import optimizer_steps, seed_everything, threads_per_process


def fold_of_rows(count: int, folds: int, seed: int) -> list[int]:
    """The fold (0 .. folds-1) of each row: a seeded shuffle dealt round-robin, so fold sizes differ by at most 1."""
    if count < folds:
        raise ValueError(f"label audit: {count} train rows cannot be split into label.audit_folds={folds} folds "
                         "(each fold's model needs rows to train on, and each fold rows to score)")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    fold = [0] * count
    for position, row in enumerate(order):
        fold[row] = position % folds
    return fold


def fit_and_score(kind: TrainingKind[Any], params: TrainParams, train_rows: Sequence, scored_rows: Sequence
                  ) -> list[np.ndarray]:
    """Train a fresh model on `train_rows` for `params.epochs` (the last epoch is kept: no dev selection, the
    audit has no rows to spare) and return its probabilities for `scored_rows`. In memory, one process."""
    seed_everything(params.seed)
    processes = engine.Processes()
    torch.set_num_threads(threads_per_process(params, processes))
    model, tokenizer = trainable.load_model(kind, params)  # as train builds it: frozen layers, LoRA as asked
    device = engine.pick_device(processes)
    engine.configure_device(device)
    model = model.to(device)
    examples = kind.encode(tokenizer, train_rows, params, with_labels=True).examples
    loop = engine.make_loop(model, params, device, processes, tokenizer.pad_token_id,
                            optimizer_steps(len(examples), params, processes), kind.loss)
    engine.fit(loop, examples, lambda _model: None, None, "label-audit")
    scored = kind.encode(tokenizer, scored_rows, params, with_labels=False).examples
    return kind.distributions(loop.model, scored, scored_rows, params.batch_size * 2, tokenizer.pad_token_id)


def cross_fit(kind: TrainingKind[Any], rows: Sequence, params: TrainParams, folds: int) -> list[np.ndarray]:
    """Out-of-sample probabilities for every row: row i's come from the model that did not train on its fold."""
    fold = fold_of_rows(len(rows), folds, params.seed)
    result: list[np.ndarray | None] = [None] * len(rows)
    for k in range(folds):
        held_out = [i for i in range(len(rows)) if fold[i] == k]
        print(f"label audit: fold {k + 1}/{folds}: training on {len(rows) - len(held_out)} rows, "
              f"scoring {len(held_out)}", flush=True)
        trained_on = [rows[i] for i in range(len(rows)) if fold[i] != k]
        for i, distribution in zip(held_out, fit_and_score(kind, params, trained_on, [rows[i] for i in held_out]),
                                   strict=True):
            result[i] = distribution
    return result  # type: ignore[return-value]  # every row is in exactly one fold


def audit(kind: TrainingKind[Any], rows: Sequence, params: TrainParams, folds: int) -> list[dict]:
    """Every row, most likely mislabelled first (the kind's `label_issues`, over cross-fitted probabilities)."""
    kind.check_labels(rows)
    kind.label_issues(rows[:0], [])  # what the kind cannot rank (multi-label) fails here, before k trainings
    return kind.label_issues(rows, cross_fit(kind, rows, params, folds))


def review_items(findings: Sequence[dict], top: int) -> list[dict]:
    """The top findings as review items for a labelling tool (`label push --review`):
    `[{"id", "tokens"|"text", "given", "suggested", "score"}]`."""
    keys = ("id", "tokens", "text", "given", "suggested", "score")
    return [{key: finding[key] for key in keys if key in finding} for finding in findings[:top]]


def summary(findings: Sequence[dict], folds: int, epochs: int, top: int) -> dict:
    return {"rows": len(findings), "flagged": sum(f["flagged"] for f in findings), "folds": folds,
            "epochs": epochs, "top": min(top, len(findings))}


def csv_text(items: Sequence[dict]) -> str:
    """The top rows as CSV: rank, id, sentence or text, given, suggested, score (tag lists space-joined)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "id", "input", "given", "suggested", "score"])
    for rank, item in enumerate(items, 1):
        joined = [" ".join(v) if isinstance(v, list) else v
                  for v in (item.get("tokens", item.get("text")), item["given"], item["suggested"])]
        writer.writerow([rank, item["id"], *joined, f"{item['score']:.6f}"])
    return out.getvalue()


def write_report(path: Path, findings: Sequence[dict], folds: int, epochs: int, top: int) -> dict:
    """`path` (JSON: summary, the top review items, every row ranked) and the top rows as CSV beside it."""
    report = {"summary": summary(findings, folds, epochs, top), "top": review_items(findings, top),
              "rows": list(findings)}
    write_json(Path(path), report)
    atomic_write_text(Path(path).with_suffix(".csv"), csv_text(report["top"]))
    return report


def run(params: Params, folds: int | None = None, top: int | None = None, epochs: int | None = None) -> dict:
    """Audit the cleaned train split with the params (options override `label.*`); returns the report."""
    label = params.label
    folds, top, epochs = folds or label.audit_folds, top or label.audit_top, epochs or label.audit_epochs
    train_file = Path(params.paths.clean) / "train.jsonl"
    if not train_file.is_file():
        raise ValueError(f"{train_file} not found: the audit reads the cleaned train split (paths.clean); run "
                         "`dvc repro clean` (or `flowtune run`) first")
    kind = model_kind_for(params).training(train_file)
    rows = kind.read(train_file)
    findings = audit(kind, rows, params.train.model_copy(update={"epochs": epochs}), folds)
    return write_report(Path(label.audit_report), findings, folds, epochs, top)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, help="folds (default: label.audit_folds)")
    parser.add_argument("--top", type=int, help="rows in the report's top list (default: label.audit_top)")
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: label.audit_epochs)")


def step(params: Params, args) -> str:
    report = run(params, args.k, args.top, args.epochs)
    counts = report["summary"]
    return (f"{counts['rows']} rows ranked, {counts['flagged']} flagged by cleanlab; top {counts['top']} -> "
            f"{params.label.audit_report}")


def main(argv: list[str] | None = None) -> None:
    run_stage("audit", step, argv, add_arguments=add_arguments, user_errors=(ValueError,))


if __name__ == "__main__":
    main()
