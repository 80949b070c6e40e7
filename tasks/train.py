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
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks import checkpoints, engine, sweeping
from tasks.fitting import (
    optimizer_steps,
    read_checked,
    save_best,
    seed_everything,
    threads_per_process,
    training_metrics,
)
from tasks.io import atomic_write_text, write_json
from tasks.kinds import kind_for
from tasks.kinds.base import TrainingKind
from tasks.params import LoraParams, Params, ParamsError, TrainParams, load_params
from tasks.stage import run_stage


def write_curve(path: Path, rows: Sequence[tuple[int, float, float | None]]) -> None:
    """`epoch,train_loss,dev_f1` CSV, one row per epoch (the shape DVC plots read)."""
    lines = ["epoch,train_loss,dev_f1"]
    lines += [f"{epoch},{loss:.6f},{'' if f1 is None else f'{f1:.6f}'}" for epoch, loss, f1 in rows]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


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
    """The kind's model (base encoder + fresh head) and tokenizer, LoRA-wrapped when asked.

    `train.freeze_embeddings` keeps the word-embedding matrix as pretrained: no gradient and no optimizer
    state for its rows (MiniLM: 11.7M of 22.7M weights), which is most of what a step updates on CPU.
    `train.freeze_layers` keeps the embeddings and the lowest encoder layers as pretrained as well.
    """
    model, tokenizer = kind.load_model(params)
    if params.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if params.freeze_layers:
        freeze_lowest_layers(model, params.freeze_layers)
    if params.lora.enabled:
        model = with_lora(model, params.lora, kind.lora_task_type)
    return model, tokenizer


def freeze_lowest_layers(model, layers: int) -> None:
    """The embeddings and encoder layers 0 .. layers-1 get no gradient: the backward pass stops at layer
    `layers`, so a step skips their gradients, not only their optimizer updates."""
    names = [name for name, _ in model.named_parameters()]
    present = {engine.layer_depth(name, top=-1) for name in names} - {-1, 0}  # encoder layers, counted from 1
    if layers > len(present):
        raise ValueError(f"train.freeze_layers {layers}: the encoder has {len(present)} layers with the names "
                         "transformers gives BERT-style encoders (encoder.layer.<i>.); freeze at most that many")
    for name, param in model.named_parameters():
        if 0 <= engine.layer_depth(name, top=-1) <= layers:  # 0: the embeddings; i + 1: layer i; -1: head
            param.requires_grad_(False)


def model_on_device(kind: TrainingKind[Any], params: TrainParams, processes: engine.Processes):
    """The kind's model (LoRA-wrapped when asked) on this process's device, its tokenizer, the device."""
    model, tokenizer = load_model(kind, params)
    device = engine.pick_device(processes)
    engine.configure_device(device)
    return model.to(device), tokenizer, device


@dataclass(frozen=True)
class Outputs:
    """Where a training run writes: the model folder, train.json, the curve CSV, resumable state."""

    model_dir: Path
    metrics_path: Path
    curve_path: Path
    checkpoint_dir: Path | None = None  # None: no checkpoints, a rerun starts over


EpochHook = Callable[[int, float | None], None]


def fit(kind: TrainingKind[Any], params: TrainParams, data_dir: Path, outputs: Outputs,
        after_epoch: EpochHook | None = None) -> dict:
    """Fine-tune on data_dir/train.jsonl, keep the epoch with the best dev score (data_dir/dev.jsonl),
    save it; returns the metrics written to train.json ({} on processes other than the main one).

    With a checkpoint_dir, the loop saves resumable state there and a rerun with the same inputs
    continues from it; the state is removed once the model is saved. `after_epoch(epoch, dev_score)`: see
    engine.fit (a sweep's trial reports its scores and may be pruned there).
    """
    processes = engine.join_processes()
    try:
        return fit_in_process(kind, params, Path(data_dir), outputs, processes, after_epoch)
    finally:
        engine.leave_processes()


def fit_in_process(kind: TrainingKind[Any], params: TrainParams, data_dir: Path, outputs: Outputs,
                   processes: engine.Processes, after_epoch: EpochHook | None = None) -> dict:
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
    progress = engine.fit(loop, train_set.examples, score, outputs.checkpoint_dir, identity, saved, after_epoch)
    if not processes.main:
        return {}
    # Counted before saving: merging LoRA adapters into the weights removes them from the model.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    save_best(loop, tokenizer, outputs.model_dir, params.max_length, kind.task_kind)
    score = progress.best_score if dev_rows else None
    metrics = training_metrics(progress, params, device, trainable, len(train_rows), processes, score)
    # `dev_f1` is the selection score's generic name (as in the curve); a kind whose score has a name
    # of its own (classifiers: dev_macro_f1) reports it under that name too, as train.json always has.
    metrics = {**metrics, kind.score_name: score, **train_set.metrics}
    write_json(outputs.metrics_path, metrics)
    write_curve(outputs.curve_path, progress.curve)
    checkpoints.clear(outputs.checkpoint_dir)
    return metrics


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
    # In a sweep's trial (flows/sweep.py) each epoch's dev score goes to the study, which may prune the trial.
    metrics = fit(kind, params.train, data_dir, outputs, sweeping.epoch_hook(params.sweep.pruner))
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
    run_stage("train", step, argv, user_errors=(sweeping.TrialPruned,))


if __name__ == "__main__":
    main()
