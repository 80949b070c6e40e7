"""Train step: fine-tune a BERT-style encoder for the configured task kind (NER or text classification).

One training skeleton (`fit`) serves every kind. The kind (tasks/kinds/) brings what differs: reading
and checking the rows, the model and its head, encoding rows into examples, the loss, and the dev
score that picks the epoch (strict IOB2 entity F1 for NER, macro-F1 for classifiers). The loop itself
is tasks/engine.py (accumulation, DDP, mixed precision, early stopping, resumable checkpoints). The
best epoch's weights are saved (safetensors + tokenizer) into a temporary sibling folder that is then
renamed into place, so a failed run never leaves a half-written model directory. With
`train.lora.enabled` (any kind) LoRA adapters train on the attention projections and the new head in
full; the adapters are merged before saving, so the output is a plain model that `transformers`
loads as is (`pipeline("token-classification" | "text-classification", ...)`, tasks/evaluate.py).

`train.processes: N` (N > 1) makes the stage relaunch itself under torchrun with N processes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks import checkpoints, engine
from tasks.io import atomic_write_text, write_json
from tasks.kinds import kind_for
from tasks.kinds.base import TrainingKind
from tasks.params import LoraParams, Params, ParamsError, TrainParams, load_params
from tasks.stage import run_stage


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


def write_curve(path: Path, rows: Sequence[tuple[int, float, float | None]]) -> None:
    """`epoch,train_loss,dev_f1` CSV, one row per epoch (the shape DVC plots read)."""
    lines = ["epoch,train_loss,dev_f1"]
    lines += [f"{epoch},{loss:.6f},{'' if f1 is None else f'{f1:.6f}'}" for epoch, loss, f1 in rows]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def plain_model(model):
    """The model to save: LoRA adapters merged into the weights (a plain transformers model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def threads_per_process(params: TrainParams, processes: engine.Processes) -> int:
    return params.num_threads or max(1, (os.cpu_count() or 1) // processes.local_world)


def with_lora(model, lora: LoraParams, task_type: str):
    """LoRA adapters on the attention projections; the new head (`classifier`) trains in full. The
    same for every kind, only peft's task type differs (it picks how the wrapper calls the model)."""
    from peft import LoraConfig, TaskType, get_peft_model  # imported lazily: only LoRA runs need peft

    config = LoraConfig(
        task_type=TaskType[task_type],
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=["classifier"],
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name the encoder does not have
        raise ValueError(f"train.lora: {exc}") from None


def load_model(kind: TrainingKind[Any], params: TrainParams):
    """The kind's model (base encoder + fresh head) and tokenizer, LoRA-wrapped when asked."""
    model, tokenizer = kind.load_model(params)
    if params.lora.enabled:
        model = with_lora(model, params.lora, kind.lora_task_type)
    return model, tokenizer


def model_on_device(kind: TrainingKind[Any], params: TrainParams, processes: engine.Processes):
    """The kind's model (LoRA-wrapped when asked) on this process's device, its tokenizer, the device."""
    model, tokenizer = load_model(kind, params)
    device = engine.pick_device(processes)
    engine.configure_device(device)
    return model.to(device), tokenizer, device


# config.json key of what flowtune records about a saved model beyond Hugging Face's own fields.
FLOWTUNE_CONFIG_KEY = "flowtune"


def save_best(loop: engine.Loop, tokenizer, model_dir: Path, max_length: int) -> None:
    """Save the best epoch's weights (not the last epoch's), LoRA adapters merged, recording in config.json
    the window length it was trained with (`flowtune predict` then windows text the same way)."""
    loop.model.load_state_dict(loop.best_state)
    model = plain_model(loop.model)
    setattr(model.config, FLOWTUNE_CONFIG_KEY, {"max_length": max_length})
    save_model(model, tokenizer, model_dir)


@dataclass(frozen=True)
class Outputs:
    """Where a training run writes: the model folder, train.json, the curve CSV, resumable state."""

    model_dir: Path
    metrics_path: Path
    curve_path: Path
    checkpoint_dir: Path | None = None  # None: no checkpoints, a rerun starts over


def fit(kind: TrainingKind[Any], params: TrainParams, data_dir: Path, outputs: Outputs) -> dict:
    """Fine-tune on data_dir/train.jsonl, keep the epoch with the best dev score (data_dir/dev.jsonl),
    save it; returns the metrics written to train.json ({} on processes other than the main one).

    With a checkpoint_dir, the loop saves resumable state there and a rerun with the same inputs
    continues from it; the state is removed once the model is saved.
    """
    processes = engine.join_processes()
    try:
        return fit_in_process(kind, params, Path(data_dir), outputs, processes)
    finally:
        engine.leave_processes()


def read_checked(kind: TrainingKind[Any], train_file: Path, dev_file: Path) -> tuple[list, list]:
    """Train and dev rows, their labels checked: a bad label fails here, before any training."""
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


def fit_in_process(kind: TrainingKind[Any], params: TrainParams, data_dir: Path, outputs: Outputs,
                   processes: engine.Processes) -> dict:
    seed_everything(params.seed)
    torch.set_num_threads(threads_per_process(params, processes))
    files = [data_dir / "train.jsonl", data_dir / "dev.jsonl"]
    train_rows, dev_rows = read_checked(kind, *files)
    model, tokenizer, device = model_on_device(kind, params, processes)
    # Tokenized once: every epoch reuses the examples.
    train_set = kind.encode(tokenizer, train_rows, params, with_labels=True)
    dev_examples = kind.encode(tokenizer, dev_rows, params, with_labels=False).examples
    loop = engine.make_loop(model, params, device, processes, tokenizer.pad_token_id,
                            optimizer_steps(len(train_set.examples), params, processes), kind.loss)
    torch.manual_seed(params.seed + processes.rank)  # dropout masks differ across processes

    def score(trained) -> float | None:
        return kind.dev_score(trained, dev_examples, dev_rows, params.batch_size * 2, tokenizer.pad_token_id)

    # The world size is part of the identity: a checkpoint holds one RNG state per process.
    identity = checkpoints.fingerprint(params, kind.labels, files) + f"/{processes.world}"
    saved = checkpoints.load(outputs.checkpoint_dir, identity)
    progress = engine.fit(loop, train_set.examples, score, outputs.checkpoint_dir, identity, saved)
    if not processes.main:
        return {}
    # Counted before saving: merging LoRA adapters into the weights removes them from the model.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    save_best(loop, tokenizer, outputs.model_dir, params.max_length)
    score = progress.best_score if dev_rows else None
    metrics = training_metrics(progress, params, device, trainable, len(train_rows), processes, score)
    # `dev_f1` is the selection score's generic name (as in the curve); a kind whose score has a name
    # of its own (classifiers: dev_macro_f1) reports it under that name too, as train.json always has.
    metrics = {**metrics, kind.score_name: score, **train_set.metrics}
    write_json(outputs.metrics_path, metrics)
    write_curve(outputs.curve_path, progress.curve)
    checkpoints.clear(outputs.checkpoint_dir)
    return metrics


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


def relaunch_under_torchrun(processes: int, argv: list[str]) -> None:
    """`train.processes: N` from a plain command (dvc repro, the flow): rerun this stage under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "tasks.train", *argv]
    sys.exit(subprocess.run(command, check=False).returncode)


def step(params: Params, _args) -> str:
    paths = params.paths
    data_dir = Path(paths.augmented)
    kind = kind_for(params).training(data_dir / "train.jsonl")
    outputs = Outputs(Path(paths.model), Path(paths.train_metrics), Path(paths.train_plots),
                      Path(paths.train_checkpoints))
    metrics = fit(kind, params.train, data_dir, outputs)
    if not metrics:
        return "done (rank > 0)"
    return f"best epoch {metrics['best_epoch']} {kind.score_name} {metrics.get(kind.score_name)} -> {paths.model}"


def processes_wanted(argv: list[str]) -> int:
    """`train.processes` from the params file named on the command line (1 when it cannot be read:
    run_stage then reports why)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml")
    try:
        return load_params(parser.parse_known_args(argv)[0].params).train.processes
    except ParamsError:
        return 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    wanted = processes_wanted(argv)
    if wanted > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_under_torchrun(wanted, argv)
    run_stage("train", step, argv)


if __name__ == "__main__":
    main()
