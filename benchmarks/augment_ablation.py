"""Which augmentation scores best on a data set, and how does the HF Trainer recipe compare? Test score over seeds.

Usage:
    .venv/bin/python benchmarks/augment_ablation.py                       # params.yaml's training, seeds 13 14 15
    .venv/bin/python benchmarks/augment_ablation.py --epochs 3 --seeds 13 14 15
    .venv/bin/python benchmarks/augment_ablation.py --epochs 2 --seeds 13 --configs both both+name_swap
    .venv/bin/python benchmarks/augment_ablation.py --params-file params-sentiment.yaml --epochs 1 \\
        --configs none synonym both hf-trainer --set learning_rate=5e-5

The data is that of the params file (`params.yaml`: WNUT-16 NER; `params-sentiment.yaml`: VADER tweets),
imported, split and cleaned with its settings. Each augmenter runs once over the cleaned train split
(augment.seed fixed), each configuration's train set is merged the way the augment stage merges it, and
the encoder is fine-tuned once per configuration and training seed; the test split is never augmented.

`hf-trainer` is the reference recipe on the unaugmented cleaned train split: transformers' `Trainer` with
the params' learning rate, epochs, batch size, warmup, weight decay, clipping, dropout and seed, random
batches, last epoch's weights (run_ner.py / run_glue.py). `none` is flowtune's engine on the same data.

Prints a markdown table: mean and spread of the kind's headline score on test (strict IOB2 entity F1,
or macro-F1), the best epoch's dev score and, for NER, the mean name invariance (a behaviour check).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tasks import augment, clean, evaluate, ingest, train  # noqa: E402
from tasks.io import write_jsonl  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.params import load_params  # noqa: E402

TRAINER = "hf-trainer"
CONFIGS = {"none": [], "synonym": ["synonym"], "backtranslation": ["backtranslation"],
           "both": ["synonym", "backtranslation"], "name_swap": ["name_swap"],
           "both+name_swap": ["synonym", "backtranslation", "name_swap"], TRAINER: []}


@dataclass(frozen=True)
class Run:
    test: float
    dev: float | None
    seconds: float
    sentences: int
    invariance: float | None  # NER's name invariance; None for other kinds and the Trainer
    groups: dict[str, float] | None = None  # test F1 per entity type or class (flowtune's evaluation only)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # partial results survive an interrupt


def prepare(work: Path, params, methods: set[str]) -> tuple[Path, dict[str, list]]:
    """Import and clean the params' data; each needed augmenter's new train records (computed once)."""
    kind = kind_for(params)
    ingest.run(params.ingest, work / "raw", kind)
    clean.run(params.clean, work / "raw", work / "clean", work / "clean.json", kind)
    train_records = augment.load_split(work / "clean" / "train.jsonl", kind)
    generated = {}
    for method in sorted(methods):
        start = time.perf_counter()
        generated[method], counts = augment.generate(method, params.augment, train_records)
        log(f"{method}: {len(generated[method])} new sentences in {time.perf_counter() - start:.0f} s {dict(counts)}")
    return work / "clean", generated


def dataset(work: Path, params, clean_dir: Path, generated: dict[str, list], methods: list[str]) -> Path:
    """A data folder for one configuration: merged train, the untouched dev and test."""
    kind = kind_for(params)
    folder = work / ("data-" + ("+".join(methods) or "none"))
    train_records = augment.load_split(clean_dir / "train.jsonl", kind)
    evaluation = {r.tokens for s in ("dev", "test") for r in augment.load_split(clean_dir / f"{s}.jsonl", kind)}
    counts = {m: Counter() for m in methods}
    merged = augment.merge(train_records, {m: generated[m] for m in methods}, evaluation, counts)
    write_jsonl(folder / "train.jsonl", [kind.from_sentence(r) for r in merged])
    for split in ("dev", "test"):
        augment.copy_exact(clean_dir / f"{split}.jsonl", folder / f"{split}.jsonl")
    return folder


def train_and_score(work: Path, data: Path, params) -> Run:
    """flowtune's train and evaluate stages on one data folder (the kind and the training both read `params`)."""
    kind, train_params = kind_for(params), params.train
    training = kind.training(data / "train.jsonl")
    model_dir = work / f"model-{data.name}-{train_params.seed}"
    metrics = train.fit(training, train_params, data, train.Outputs(model_dir, work / "train.json", work / "curve.csv"))
    if "class_weights" in metrics:
        log(f"class weights: {metrics['class_weights']}")
    scores = evaluate.run(params.evaluate, model_dir, data / "test.jsonl", work / "eval.json", work / "pred.jsonl",
                          train_params.max_length, kind=kind)
    behaviour = json.loads((work / "eval.json").read_text()).get("behaviour") or {}
    invariance = behaviour.get("name_invariance", {}).get("pass_rate")
    return Run(scores.headline.value, metrics["dev_f1"], metrics["train_seconds"], metrics["train_sentences"],
               invariance, {name: group.f1 for name, group in (scores.groups or {}).items()})


def trainer_score(data: Path, params) -> Run:
    """The HF Trainer recipe of the params' kind on one data folder."""
    from benchmarks import trainer_recipes

    recipe = trainer_recipes.RECIPES[params.task.kind]
    return Run(*recipe(data, params, params.train), invariance=None)


def run_config(work: Path, params, clean_dir: Path, generated: dict, name: str) -> Run:
    """One configuration, one training run: `params` carries that run's train section (overrides and seed)."""
    data = dataset(work, params, clean_dir, generated, CONFIGS[name])
    run = trainer_score(data, params) if name == TRAINER else train_and_score(work, data, params)
    invariance = f", name invariance {run.invariance:.3f}" if run.invariance is not None else ""
    dev = f", dev {run.dev:.4f}" if run.dev is not None else ""
    groups = f" ({', '.join(f'{g} {f1:.3f}' for g, f1 in run.groups.items())})" if run.groups else ""
    log(f"{name} seed {params.train.seed}: test {run.test:.4f}{groups}{dev}{invariance}, {run.sentences} train "
        f"sentences, {run.seconds:.0f} s")
    return run


def train_overrides(params, args) -> dict:
    """--epochs and --set KEY=VALUE as train-section updates (unknown keys are an error)."""
    wanted = {"epochs": args.epochs} if args.epochs else {}
    for setting in args.set:
        key, _, value = setting.partition("=")
        known = type(params.train).model_fields
        if key not in known:
            raise SystemExit(f"--set {setting}: train has no key {key!r} (keys: {', '.join(known)})")
        wanted[key] = yaml.safe_load(value)
    return wanted


def with_train(params, updates: dict):
    """The params with these train keys changed: the kind reads some of them too (train.class_weight)."""
    # Validated, not copied: YAML reads "5e-5" as a string, which the schema turns into the float it means.
    train = type(params.train).model_validate({**params.train.model_dump(), **updates})
    return params.model_copy(update={"train": train})


def print_table(params, args, rows: list[tuple[str, list[Run]]]) -> None:
    train_params = with_train(params, train_overrides(params, args)).train
    print(f"\n{args.params_file}: {train_params.epochs} epochs, batch {train_params.batch_size}, "
          f"lr {train_params.learning_rate}, seeds {args.seeds}; test {params.task.kind} headline score\n")
    print("| configuration | train sentences | test mean | spread (sd) | per seed | dev mean | name invariance "
          "| train s/run |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name, runs in rows:
        tests = [r.test for r in runs]
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        devs = [r.dev for r in runs if r.dev is not None]
        invariances = [r.invariance for r in runs if r.invariance is not None]
        print(f"| {name} | {runs[0].sentences:,} | {statistics.mean(tests):.4f} | {spread:.4f} | "
              f"{', '.join(f'{t:.4f}' for t in tests)} | {statistics.mean(devs) if devs else float('nan'):.4f} | "
              f"{statistics.mean(invariances) if invariances else float('nan'):.3f} | "
              f"{statistics.mean(r.seconds for r in runs):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", default="params.yaml", help="the pipeline's params (data, cleaning, training)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs for every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train key for every run, e.g. --set learning_rate=5e-5 (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--configs", nargs="+", default=[c for c in CONFIGS if c != TRAINER], choices=list(CONFIGS))
    args = parser.parse_args()
    params = load_params(ROOT / args.params_file)
    overrides = train_overrides(params, args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clean_dir, generated = prepare(work, params, {m for name in args.configs for m in CONFIGS[name]})
        rows = []
        for name in args.configs:
            runs = [run_config(work, with_train(params, {**overrides, "seed": seed}), clean_dir, generated, name)
                    for seed in args.seeds]
            rows.append((name, runs))
            log(f"{name}: test {[round(r.test, 4) for r in runs]}")
    print_table(params, args, rows)


if __name__ == "__main__":
    main()
