"""The training skeleton: the one way a stage trains a model, shared by train (a fresh head on the base
encoder) and distill (a student cut from the candidate).

`fit(recipe, data_dir, outputs)` seeds, sets threads, reads and checks train/dev, builds the model,
encodes the data, builds the loop (tasks/engine.py), runs it with resumable checkpoints, saves the best
epoch (tasks/saving.py) and writes the metrics and the curve. A `Recipe` says what differs between the
stages, as hooks the skeleton calls in that order: the model, the training data, the loss, the runner
(what the training forward goes through), the checkpoint identity and the extra metrics. The base class is
the train stage's recipe; distill's `StudentRecipe` (tasks/distill.py) overrides its hooks.

The kind (a tasks.kinds.base.TrainingKind) is not imported here: the core sits below the kinds.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks import checkpoints, engine, trainable
from tasks.io import atomic_write_text, write_json
from tasks.params import TrainParams
from tasks.saving import save_best
from tasks.sweeping import CORES_ENV

EpochHook = Callable[[int, float | None], None]


@dataclass(frozen=True)
class Outputs:
    """Where a training run writes: the model folder, its metrics JSON, the curve CSV, resumable state."""

    model_dir: Path
    metrics_path: Path
    curve_path: Path | None = None  # None: no curve (the student's)
    checkpoint_dir: Path | None = None  # None: no checkpoints, a rerun starts over


class Recipe:
    """What a stage trains and how; the defaults are the train stage's: the kind's model and head (LoRA and
    frozen layers as `settings` ask), its encoding, its loss, the model itself as the runner.

    `after_epoch(epoch, dev_score)`: see engine.fit (a sweep's trial reports its scores and may be pruned)."""

    distributed = True  # joins torchrun's process group when launched by it (train.processes > 1)

    def __init__(self, kind: Any, settings: TrainParams, after_epoch: EpochHook | None = None) -> None:
        self.kind, self.settings, self.after_epoch = kind, settings, after_epoch

    def model(self) -> tuple[torch.nn.Module, Any]:
        """The model to train (on the CPU) and its tokenizer."""
        return trainable.load_model(self.kind, self.settings)

    def data(self, tokenizer, rows: Sequence[Any]) -> Any:
        """What the loop trains on: an object with `examples` (engine.Example) and whatever the other hooks
        read (here the kind's encoding, whose `metrics` train.json reports)."""
        return self.kind.encode(tokenizer, rows, self.settings, with_labels=True)

    def loss(self) -> engine.Loss:
        return self.kind.loss

    def runner(self, model: torch.nn.Module, data: Any) -> torch.nn.Module | None:
        """What the training forward goes through instead of the model (None: the model, DDP-wrapped and
        compiled as the settings ask)."""
        return None

    def seed_dropout(self, processes: engine.Processes) -> None:
        """The RNG the loop draws dropout masks from: seeded per process, so masks differ across processes."""
        torch.manual_seed(self.settings.seed + processes.rank)

    def identity(self, files: list[Path], processes: engine.Processes) -> str:
        """A checkpoint resumes only a run with this identity. The world size is part of it: a checkpoint
        holds one RNG state per process."""
        return checkpoints.fingerprint(self.settings, self.kind.labels, files) + f"/{processes.world}"

    def metrics(self, base: dict, score: float | None, data: Any) -> dict:
        """The metrics file: `base` (training_metrics) and what the recipe adds. `dev_f1` is the selection
        score's generic name (as in the curve); a kind whose score has a name of its own (classifiers:
        dev_macro_f1) reports it under that name too, as train.json always has."""
        return {**base, self.kind.score_name: score, **data.metrics}


def fit(recipe: Recipe, data_dir: Path, outputs: Outputs) -> dict:
    """Train on data_dir/train.jsonl, keep the epoch with the best dev score (data_dir/dev.jsonl), save it;
    returns the metrics written to `outputs.metrics_path` ({} on processes other than the main one).

    With a checkpoint_dir, the loop saves resumable state there and a rerun with the same inputs continues
    from it; the state is removed once the model is saved."""
    if not recipe.distributed:
        return fit_in_process(recipe, Path(data_dir), outputs, engine.Processes())
    processes = engine.join_processes()
    try:
        return fit_in_process(recipe, Path(data_dir), outputs, processes)
    finally:
        engine.leave_processes()


def fit_in_process(recipe: Recipe, data_dir: Path, outputs: Outputs, processes: engine.Processes) -> dict:
    settings, kind = recipe.settings, recipe.kind
    seed_everything(settings.seed)
    torch.set_num_threads(threads_per_process(settings, processes))
    files = [data_dir / "train.jsonl", data_dir / "dev.jsonl"]
    train_rows, dev_rows = read_checked(kind, *files)
    model, tokenizer = recipe.model()
    device = engine.pick_device(processes)
    engine.configure_device(device)
    model = model.to(device)
    # Encoded once: every epoch reuses the examples.
    data = recipe.data(tokenizer, train_rows)
    dev_examples = kind.encode(tokenizer, dev_rows, settings, with_labels=False).examples
    steps = optimizer_steps(len(data.examples), settings, processes)
    loop = engine.make_loop(model, settings, device, processes, tokenizer.pad_token_id, steps, recipe.loss(),
                            recipe.runner(model, data))
    recipe.seed_dropout(processes)

    def score(trained) -> float | None:
        return kind.dev_score(trained, dev_examples, dev_rows, settings.batch_size * 2, tokenizer.pad_token_id)

    identity = recipe.identity(files, processes)
    saved = checkpoints.load(outputs.checkpoint_dir, identity)
    progress = engine.fit(loop, data.examples, score, outputs.checkpoint_dir, identity, saved, recipe.after_epoch)
    if not processes.main:
        return {}
    # Counted before saving: merging LoRA adapters into the weights removes them from the model.
    size = sum(p.numel() for p in model.parameters() if p.requires_grad)
    save_best(loop, tokenizer, outputs.model_dir, settings.max_length, kind.task_kind)
    best = progress.best_score if dev_rows else None
    base = training_metrics(progress, settings, device, size, len(train_rows), processes, best)
    metrics = recipe.metrics(base, best, data)
    write_json(outputs.metrics_path, metrics)
    if outputs.curve_path is not None:
        write_curve(outputs.curve_path, progress.curve)
    checkpoints.clear(outputs.checkpoint_dir)
    return metrics


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def threads_per_process(params: TrainParams, processes: engine.Processes) -> int:
    """`train.num_threads`, else this process's share of the cores: the machine's, or those a sweep lends
    its trial when several trials share the machine (tasks/sweeping.py, CORES_ENV)."""
    cores = int(os.environ.get(CORES_ENV) or 0) or os.cpu_count() or 1
    return params.num_threads or max(1, cores // processes.local_world)


def read_checked(kind, train_file: Path, dev_file: Path) -> tuple[list, list]:
    """Train and dev rows, their labels checked by the kind: a bad label fails here, before any training."""
    train_rows, dev_rows = kind.read(train_file), kind.read(dev_file)
    if not train_rows:
        raise ValueError(f"{train_file} has nothing to train on")
    kind.check_labels(train_rows)
    kind.check_labels(dev_rows)
    return train_rows, dev_rows


def optimizer_steps(examples: int, params: TrainParams, processes: engine.Processes) -> int:
    """Steps of the whole run (the learning-rate schedule's length): global batches per epoch x epochs."""
    per_step = params.batch_size * params.gradient_accumulation_steps * processes.world
    return -(-examples // per_step) * params.epochs


def training_metrics(progress: engine.Progress, params: TrainParams, device, trainable: int, rows: int,
                     processes: engine.Processes, score: float | None) -> dict:
    """What train.json (and the student's distill.json) report for any kind; `score`: the best epoch's dev
    score (None without dev rows)."""
    return {
        "best_epoch": progress.best_epoch,
        "dev_f1": score,
        "train_seconds": round(progress.seconds, 3),
        "train_sentences": rows,
        # Real (non-pad) word pieces per second of optimisation, dev scoring and checkpoints excluded.
        "train_tokens_per_second": round(progress.tokens / max(progress.seconds, 1e-9), 1),
        "device": device.type,
        "processes": processes.world,
        "precision": str(engine.choose_precision(params.precision, device).dtype or torch.float32).split(".")[-1],
        "epochs_run": len(progress.curve),
        "stopped_early": progress.stopped_early,
        "optimizer_steps": progress.global_step,
        "trainable_parameters": trainable,
    }


def write_curve(path: Path, rows: Sequence[tuple[int, float, float | None]]) -> None:
    """`epoch,train_loss,dev_f1` CSV, one row per epoch (the shape DVC plots read)."""
    lines = ["epoch,train_loss,dev_f1"]
    lines += [f"{epoch},{loss:.6f},{'' if f1 is None else f'{f1:.6f}'}" for epoch, loss, f1 in rows]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
