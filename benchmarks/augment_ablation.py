"""Does augmentation help? Test entity F1 with no augmentation, synonym swap, back-translation, name swap, and mixes.

Usage:
    .venv/bin/python benchmarks/augment_ablation.py                       # params.yaml's training, seeds 13 14 15
    .venv/bin/python benchmarks/augment_ablation.py --epochs 3 --seeds 13 14 15
    .venv/bin/python benchmarks/augment_ablation.py --epochs 2 --seeds 13 --configs both both+name_swap

The data is the pipeline's own: WNUT-16 imported, split and cleaned with `params.yaml`. Each augmenter
runs once over the cleaned train split (augment.seed fixed), each configuration's train set is merged
the way the augment stage merges it, and the encoder is fine-tuned once per configuration and training
seed; the test split is never augmented. Prints a markdown table: mean and spread of strict IOB2 entity
F1 on test, and the mean name invariance (the behaviour check of the evaluation), per configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import augment, clean, evaluate, ingest, train  # noqa: E402
from tasks.io import write_jsonl  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.kinds.ner.kind import NerKind  # noqa: E402
from tasks.kinds.ner.records import load_jsonl  # noqa: E402
from tasks.params import load_params  # noqa: E402

CONFIGS = {"none": [], "synonym": ["synonym"], "backtranslation": ["backtranslation"],
           "both": ["synonym", "backtranslation"], "name_swap": ["name_swap"],
           "both+name_swap": ["synonym", "backtranslation", "name_swap"]}


def prepare(work: Path, params, methods: set[str]) -> tuple[Path, dict[str, list]]:
    """Import and clean the default data; each needed augmenter's new train records (computed once)."""
    ingest.run(params.ingest, work / "raw", kind_for(params))
    clean.run(params.clean, work / "raw", work / "clean", work / "clean.json", kind_for(params))
    train_records = load_jsonl(work / "clean" / "train.jsonl")
    generated = {}
    for method in sorted(methods):
        start = time.perf_counter()
        generated[method], counts = augment.generate(method, params.augment, train_records)
        print(f"{method}: {len(generated[method])} new sentences in {time.perf_counter() - start:.0f} s "
              f"{dict(counts)}", file=sys.stderr, flush=True)
    return work / "clean", generated


def dataset(work: Path, clean_dir: Path, generated: dict[str, list], methods: list[str]) -> Path:
    """A data folder for one configuration: merged train, the untouched dev and test."""
    folder = work / ("data-" + ("+".join(methods) or "none"))
    train_records = load_jsonl(clean_dir / "train.jsonl")
    evaluation = {r.tokens for s in ("dev", "test") for r in load_jsonl(clean_dir / f"{s}.jsonl")}
    counts = {m: Counter() for m in methods}
    merged = augment.merge(train_records, {m: generated[m] for m in methods}, evaluation, counts)
    write_jsonl(folder / "train.jsonl", merged)
    for split in ("dev", "test"):
        augment.copy_exact(clean_dir / f"{split}.jsonl", folder / f"{split}.jsonl")
    return folder


def train_and_score(work: Path, data: Path, params, seed: int,
                    epochs: int | None) -> tuple[float, float, int, float]:
    """(test strict F1, training seconds, train sentences, name invariance) for one training run."""
    train_params = params.train.model_copy(update={"seed": seed, **({"epochs": epochs} if epochs else {})})
    model_dir = work / f"model-{data.name}-{seed}"
    metrics = train.fit(NerKind(params.task.labels), train_params, data,
                        train.Outputs(model_dir, work / "train.json", work / "curve.csv"))
    scores = evaluate.run(params.evaluate, model_dir, data / "test.jsonl", work / "eval.json", work / "pred.jsonl",
                          train_params.max_length, kind=kind_for(params))
    f1 = scores.headline.value
    invariance = json.loads((work / "eval.json").read_text())["behaviour"]["name_invariance"]["pass_rate"]
    print(f"{data.name} seed {seed}: test F1 {f1:.4f}, name invariance {invariance:.3f}, "
          f"{metrics['train_sentences']} train sentences, {metrics['train_seconds']:.0f} s",
          file=sys.stderr, flush=True)  # partial results survive an interrupt
    return f1, metrics["train_seconds"], metrics["train_sentences"], invariance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs for every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clean_dir, generated = prepare(work, params, {m for name in args.configs for m in CONFIGS[name]})
        rows = []
        for name in args.configs:
            data = dataset(work, clean_dir, generated, CONFIGS[name])
            runs = [train_and_score(work, data, params, seed, args.epochs) for seed in args.seeds]
            f1s = [f1 for f1, _, _, _ in runs]
            seconds, invariance = (statistics.mean(r[i] for r in runs) for i in (1, 3))
            rows.append((name, runs[0][2], f1s, seconds, invariance))
            print(f"{name}: F1 {f1s}", file=sys.stderr, flush=True)
    epochs = args.epochs or params.train.epochs
    print(f"\n{epochs} epochs, seeds {args.seeds}, strict IOB2 entity F1 on the WNUT-16 test split\n")
    print("| augmentation | train sentences | test F1 mean | spread (sd) | per seed | name invariance | train s/run |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for name, sentences, f1s, seconds, invariance in rows:
        spread = statistics.stdev(f1s) if len(f1s) > 1 else 0.0
        print(f"| {name} | {sentences:,} | {statistics.mean(f1s):.4f} | {spread:.4f} | "
              f"{', '.join(f'{f:.4f}' for f in f1s)} | {invariance:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
