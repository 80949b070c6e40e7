"""Does distillation beat the same student trained without its teacher? Test score over seeds (issue #18).

Usage:
    .venv/bin/python benchmarks/distill_quality.py --work /tmp/distill            # params.yaml, 3 seeds
    .venv/bin/python benchmarks/distill_quality.py --work /tmp/distill --seeds 13 \\
        --configs alpha=1 alpha=0.5,temperature=2 alpha=0.5,copies=2,epochs=3
    .venv/bin/python benchmarks/distill_quality.py --params-file params-sentiment.yaml --work /tmp/distill-vader
    .venv/bin/python benchmarks/distill_quality.py --params-file params-sentiment.yaml --work /tmp/distill-vader \\
        --configs alpha=0.5,copies=2,epochs=1,text=/tmp/tweets.txt     # plus unlabelled text (one per line)

The data is that of the params file, imported, split, cleaned and augmented as the pipeline does. The
teacher is the params' candidate (train section, its seed), trained once; its logits on augmented train and
the configuration's transfer set are computed once per transfer setting, as the teacher_logits stage does.
Each configuration then trains the student of `compress.student_layers` layers (3 when the params have it
off) with `tasks.distill.train_student`, once per seed, and scores it on test with the kind's evaluation,
like the compress stage. `alpha=1` is the student trained on the gold labels alone (and without a transfer
set): the baseline distillation has to beat.

`--work DIR` keeps the data, the teacher and its logits; a second run with the same DIR reuses them, so two
processes can train students side by side once the first has built them. Prints a markdown table: mean and
spread of the test score, the dev score, the drop against the teacher and the batch-1 speedup.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tasks import augment, clean, distill, ingest, train  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.params import load_params  # noqa: E402

DEFAULT_CONFIGS = ["alpha=1", "alpha=0.5,temperature=2"]


@dataclass(frozen=True)
class Scored:
    test: float
    dev: float | None
    p50_ms: float | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # partial results survive an interrupt


def with_sections(params, **sections: dict):
    """The params with these keys changed per section, validated by the schema (YAML reads 5e-5 as a string)."""
    update = {name: type(getattr(params, name)).model_validate({**getattr(params, name).model_dump(), **keys})
              for name, keys in sections.items()}
    return params.model_copy(update=update)


def prepared(params, work: Path):
    """The params pointed at `work`, with its augmented data, teacher and teacher logits built once."""
    kind = kind_for(params)
    layers = params.compress.student_layers or 3
    params = with_sections(params, paths={"augmented": str(work / "augmented"), "model": str(work / "teacher")},
                           compress={"student_layers": layers, "variants": ["student"]})
    if not (work / "augmented" / "test.jsonl").is_file():
        ingest.run(params.ingest, work / "raw", kind)
        clean.run(params.clean, work / "raw", work / "clean", work / "clean.json", kind)
        augment.run(params.augment, work / "clean", work / "augmented", work / "augment.json", kind=kind)
    if not (work / "teacher" / "config.json").is_file():
        log(f"teacher: {params.train.epochs} epochs, seed {params.train.seed}")
        outputs = train.Outputs(work / "teacher", work / "teacher-train.json", work / "teacher-curve.csv")
        train.fit(kind.training(work / "augmented" / "train.jsonl"), params.train, work / "augmented", outputs)
    return params


def with_teacher_logits(params, work: Path):
    """The params pointed at the teacher's logits for their transfer set, computed once per transfer setting."""
    rules = params.compress
    text = f"-text-{Path(rules.transfer_text).stem}" if rules.transfer_text else ""
    name = f"teacher_logits-copies{rules.transfer_copies}-p{rules.transfer_replace_prob}{text}.safetensors"
    params = with_sections(params, paths={"teacher_logits": str(work / name)})
    if not (work / name).is_file():
        log(distill.teacher_logits(params, kind_for(params)))
    return params


def score(params, model_dir: Path, predictions: Path, dev: float | None = None) -> Scored:
    """The kind's evaluation on the CPU, as the compress stage judges a variant."""
    report, _ = kind_for(params).evaluate(params.evaluate, model_dir, Path(params.paths.augmented) / "test.jsonl",
                                          predictions, params.train.max_length, device="cpu")
    return Scored(report.headline.value, dev, report.latency.p50_ms if report.latency else None)


def config_keys(config: str) -> dict:
    """'alpha=0.5,temperature=2' -> compress keys {distill_alpha: 0.5, temperature: 2.0}. Without a teacher
    (alpha=1) there is no transfer set unless the configuration names one (which the schema then refuses)."""
    names = {"alpha": "distill_alpha", "temperature": "temperature", "epochs": "distill_epochs",
             "learning_rate": "distill_learning_rate", "copies": "transfer_copies",
             "replace_prob": "transfer_replace_prob", "text": "transfer_text", "layers": "student_layer_choice"}
    keys = {}
    for setting in config.split(","):
        key, _, value = setting.partition("=")
        if key not in names:
            raise SystemExit(f"--configs {config}: unknown key {key!r} (keys: {', '.join(names)})")
        keys[names[key]] = yaml.safe_load(value)
    if keys.get("distill_alpha") == 1:
        keys.setdefault("transfer_copies", 0)
    return keys


def student_run(params, work: Path, config: str, seed: int) -> Scored:
    """One student: trained with this configuration and seed, then scored on test."""
    name = re.sub(r"[^\w=.-]", "_", config) + f"-seed{seed}"  # a text=/path/file configuration names a file
    run_params = with_sections(params, compress=config_keys(config), train={"seed": seed}, paths={
        "student": str(work / f"student-{name}"), "student_checkpoints": str(work / f"checkpoints-{name}"),
        "student_metrics": str(work / f"distill-{name}.json")})
    run_params = with_teacher_logits(run_params, work)
    metrics = distill.train_student(run_params, kind_for(run_params))
    result = score(run_params, work / f"student-{name}", work / f"predictions-{name}.jsonl", metrics["dev_f1"])
    log(f"{config} seed {seed}: test {result.test:.4f}, dev {result.dev}, p50 {result.p50_ms} ms, "
        f"{metrics['train_seconds']:.0f} s, {metrics['transfer_rows']} transfer rows")
    return result


def print_table(params, teacher: Scored, rows: list[tuple[str, list[Scored]]]) -> None:
    rules = params.compress
    print(f"\nteacher: test {teacher.test:.4f}, p50 {teacher.p50_ms} ms; student {rules.student_layers} layers, "
          f"{rules.distill_epochs} epochs, lr {rules.distill_learning_rate} (unless the configuration says)\n")
    print("| configuration | test mean | spread (sd) | per seed | dev mean | drop vs teacher | speedup (p50) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for config, runs in rows:
        tests = [r.test for r in runs]
        devs = [r.dev for r in runs if r.dev is not None]
        p50s = [r.p50_ms for r in runs if r.p50_ms]
        speedup = f"{teacher.p50_ms / statistics.median(p50s):.2f}x" if p50s and teacher.p50_ms else "-"
        print(f"| {config} | {statistics.mean(tests):.4f} | {statistics.stdev(tests) if len(tests) > 1 else 0:.4f} | "
              f"{', '.join(f'{t:.4f}' for t in tests)} | {statistics.mean(devs) if devs else float('nan'):.4f} | "
              f"{teacher.test - statistics.mean(tests):+.4f} | {speedup} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", default="params.yaml", help="the pipeline's params (data, training, compress)")
    parser.add_argument("--work", type=Path, help="keep data, teacher and logits here (reused by later runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help="comma-separated compress keys per configuration: alpha, temperature, epochs, "
                             "learning_rate, copies, replace_prob, text (a file of unlabelled text), layers "
                             "(spread | bottom); alpha=1: no teacher")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (train.num_threads; 0 = all cores)")
    args = parser.parse_args()
    params = with_sections(load_params(ROOT / args.params_file), train={"num_threads": args.threads})
    for config in args.configs:
        config_keys(config)  # a typo fails before hours of training
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        params = prepared(params, work)
        teacher = score(params, work / "teacher", work / "teacher-predictions.jsonl")
        rows = [(config, [student_run(params, work, config, seed) for seed in args.seeds]) for config in args.configs]
    print_table(params, teacher, rows)


if __name__ == "__main__":
    main()
