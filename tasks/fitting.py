"""What a training stage does around the loop (tasks/engine.py), shared by train and distill: seeding,
threads, the checked splits, the schedule's length, saving the best epoch as a plain transformers folder,
and the numbers train.json (and the student's distill.json) report."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from tasks import engine
from tasks.params import TrainParams
from tasks.sweeping import CORES_ENV
from tasks.variants import FLOWTUNE_CONFIG_KEY


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_model(model, tokenizer, model_dir: Path) -> None:
    """Write model + tokenizer to a sibling temp dir, then swap it in (never a half-written dir)."""
    model_dir = Path(model_dir)
    staging = model_dir.with_name(f".{model_dir.name}.tmp")
    previous = model_dir.with_name(f".{model_dir.name}.old")
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if model_dir.exists():
            model_dir.rename(previous)
        staging.rename(model_dir)
    except BaseException:
        if previous.exists() and not model_dir.exists():
            previous.rename(model_dir)  # put the last good model back
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def plain_model(model):
    """The model to save: LoRA adapters merged into the weights (a plain transformers model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def threads_per_process(params: TrainParams, processes: engine.Processes) -> int:
    """`train.num_threads`, else this process's share of the cores: the machine's, or those a sweep lends
    its trial when several trials share the machine (tasks/sweeping.py, CORES_ENV)."""
    cores = int(os.environ.get(CORES_ENV) or 0) or os.cpu_count() or 1
    return params.num_threads or max(1, cores // processes.local_world)




def save_best(loop: engine.Loop, tokenizer, model_dir: Path, max_length: int, task_kind: str) -> None:
    """Save the best epoch's weights (not the last epoch's), LoRA adapters merged, recording in config.json
    the window length it was trained with (`flowtune predict` then windows text the same way) and its task
    kind ("ner" | "textclass": what `tasks.kinds.kind_of_model` reads to load it)."""
    loop.model.load_state_dict(loop.best_state)
    model = plain_model(loop.model)
    setattr(model.config, FLOWTUNE_CONFIG_KEY, {"max_length": max_length, "task_kind": task_kind})
    save_model(model, tokenizer, model_dir)


def read_checked(kind, train_file: Path, dev_file: Path) -> tuple[list, list]:
    """Train and dev rows, their labels checked by the kind (a tasks.kinds.base.TrainingKind, not imported:
    the core sits below the kinds): a bad label fails here, before any training."""
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
    """What train.json reports for any kind; `score`: the best epoch's dev score (None without dev rows)."""
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
