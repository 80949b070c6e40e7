"""Bit-for-bit check of the training path: digests of tiny models trained by train and distill.

Usage (about 20 s on 2 cores):
    PYTHONPATH=. .venv/bin/python benchmarks/training_digests.py > after.txt   # then diff with a run before

Trains, on fixed synthetic data and seeds, a tiny 2-layer tagger (checkpoints every 3 steps, so saving and
clearing state is on the path), cuts and distills its 1-layer student (teacher logits, transfer copies,
checkpoints), and trains a tiny classifier; prints the sha256 of each saved `model.safetensors` and every
metric but the timings. Run it before and after a change that should not change results (a refactor of
tasks/trainer.py, tasks/engine.py, tasks/distill.py): identical output means identical weights, so
docs/BENCHMARKS.md's training and distillation numbers stand without rerunning them (DECISIONS 64).
Digests depend on the torch version and the CPU's kernels: compare runs on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import distill, train  # noqa: E402
from tasks.io import write_jsonl  # noqa: E402
from tasks.kinds import kind_for  # noqa: E402
from tasks.kinds.textclass import records as textdata  # noqa: E402
from tasks.kinds.textclass.params import TextclassTrainParams  # noqa: E402
from tasks.kinds.textclass.records import TextExample  # noqa: E402
from tasks.kinds.textclass.training import TextClassTraining  # noqa: E402
from tasks.params import load_params  # noqa: E402
from tests.helpers import evaluate_params, synthetic, tiny_encoder, train_ner, train_params  # noqa: E402

TIMINGS = {"train_seconds", "train_tokens_per_second"}
TYPES = ["person", "geo-loc"]
STUDENT = {"variants": ["student"], "student_layers": 1, "student_layer_choice": "spread", "distill_alpha": 0.5,
           "temperature": 2.0, "distill_epochs": 2, "distill_learning_rate": 5e-3, "transfer_copies": 1,
           "transfer_replace_prob": 0.2}


def digest(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()[:16]


def show(name: str, model_dir: Path, metrics: dict) -> None:
    kept = {key: value for key, value in metrics.items() if key not in TIMINGS}
    print(name, digest(model_dir), json.dumps(kept, sort_keys=True), flush=True)


def tagger_and_student(root: Path, base: Path) -> None:
    data = root / "augmented"
    for split, (count, seed) in {"train": (32, 1), "dev": (12, 2), "test": (12, 3)}.items():
        write_jsonl(data / f"{split}.jsonl", synthetic(count, seed))
    metrics = train_ner(train_params(base, learning_rate=5e-3, checkpoint_every_steps=3), TYPES, data,
                        root / "model", root / "train.json", root / "curve.csv", root / "checkpoints")
    show("tagger", root / "model", metrics)
    print("curve", (root / "curve.csv").read_text().replace("\n", " "))
    params = load_params(ROOT / "params.yaml")
    paths = params.paths.model_copy(update={
        "model": str(root / "model"), "augmented": str(data), "teacher_logits": str(root / "teacher.safetensors"),
        "student": str(root / "student"), "student_checkpoints": str(root / "student-checkpoints"),
        "student_metrics": str(root / "distill.json")})
    params = params.model_copy(update={
        "task": params.task.model_copy(update={"labels": TYPES}), "paths": paths,
        "train": train_params(Path("unused"), checkpoint_every_steps=5), "evaluate": evaluate_params(),
        "compress": params.compress.model_copy(update=STUDENT)})
    distill.teacher_logits(params, kind_for(params))
    show("student", root / "student", distill.train_student(params, kind_for(params)))


def classifier(root: Path, base: Path) -> None:
    def texts(count: int, seed: int) -> list[TextExample]:
        return [TextExample(f"{seed}:{i}", " ".join(["john" if i % 2 == 0 else "someone",
                                                      "paris" if (i // 2) % 2 == 0 else "somewhere", "today"]),
                            "person" if i % 2 == 0 else "place") for i in range(count)]

    for split, (count, seed) in {"train": (24, 1), "dev": (8, 2)}.items():
        textdata.write_examples(root / "texts" / f"{split}.jsonl", texts(count, seed))
    common = train_params(base, learning_rate=5e-3).model_dump(exclude={"label_all_pieces"})
    outputs = train.Outputs(root / "classifier", root / "classifier.json", root / "classifier.csv")
    classifier = TextClassTraining(["person", "place"], False)
    metrics = train.fit(classifier, TextclassTrainParams(**common, class_weight="none"), root / "texts", outputs)
    show("classifier", root / "classifier", metrics)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base = tiny_encoder(root / "base")
        tagger_and_student(root, base)
        classifier(root, base)


if __name__ == "__main__":
    main()
