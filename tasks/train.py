"""Train step: fine-tune a BERT-style encoder for IOB2 token classification.

Data handling lives here (label ids, tokenization once into cached windows, the label list in the
model config); the loop itself is tasks/engine.py (accumulation, DDP, mixed precision, early
stopping, resumable checkpoints). After each epoch the model is scored on dev with seqeval strict
IOB2 entity F1 over words; the best epoch's weights are saved (safetensors + tokenizer) into a
temporary sibling folder that is then renamed into place, so a failed run never leaves a
half-written model directory. With `train.lora.enabled` the adapters are merged before saving, so
the output is a plain model that `transformers.pipeline("token-classification", ...)` loads as is.

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
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks import checkpoints, engine
from tasks.iob import label_list, split_tag
from tasks.modeling import (
    Example,
    build_examples,
    continuation_ids,
    encode_words,
    predict_label_ids,
    resolve_base_model,
    strict_f1,
)
from tasks.params import SEQUENCE_CLASSIFICATION, Params, ParamsError, TrainParams, load_params
from tasks.records import NerRecord, atomic_write_text, load_jsonl, write_json
from tasks.stage import run_stage


def label_ids(records: Sequence[NerRecord], label2id: dict[str, int]) -> list[list[int]]:
    """Tag ids per record; a tag outside the label list is an error naming the record and tag."""
    result = []
    for record in records:
        unknown = [tag for tag in record.tags if tag not in label2id]
        if unknown:
            raise ValueError(
                f"record {record.id}: tag {unknown[0]!r} is not in the label list "
                f"{list(label2id)} (check validate.entity_types)"
            )
        result.append([label2id[tag] for tag in record.tags])
    return result


def entity_types_in(records: Sequence[NerRecord]) -> list[str]:
    """Entity types used in the records, sorted (used when validate.entity_types is empty)."""
    return sorted({entity for r in records for tag in r.tags if (entity := split_tag(tag)[1])})


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


def load_model(params: TrainParams, labels: list[str]):
    """The base encoder with a fresh token-classification head for `labels` (LoRA-wrapped if asked), and
    its fast tokenizer."""
    base = resolve_base_model(params.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.is_fast:
        raise ValueError(f"{base}: a fast tokenizer (tokenizer.json) is needed for word alignment")
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        hidden_dropout_prob=params.dropout,
        attention_probs_dropout_prob=params.dropout,
        # A fine-tuned checkpoint with another label set may serve as base: re-initialise its head.
        ignore_mismatched_sizes=True,
    )
    if params.lora.enabled:
        model = with_lora(model, params.lora)
    return model, tokenizer


def with_lora(model, lora):
    """LoRA adapters on the attention projections; the new classification head trains in full."""
    from peft import LoraConfig, TaskType, get_peft_model  # imported lazily: only LoRA runs need peft

    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
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


def plain_model(model):
    """The model to save: LoRA adapters merged into the weights (a plain transformers model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def encode(
    tokenizer,
    records: Sequence[NerRecord],
    max_length: int,
    labels: list[list[int]] | None = None,
    continuation: list[int] | None = None,
) -> list[Example]:
    """Tokenize once into cached windows; every epoch reuses them."""
    pieces = encode_words(tokenizer, [r.tokens for r in records])
    return build_examples(tokenizer, pieces, max_length, labels, continuation)


def dev_f1(
    model,
    examples: Sequence[Example],
    records: Sequence[NerRecord],
    labels: list[str],
    batch_size: int,
    pad_id: int,
) -> float | None:
    """Strict IOB2 entity F1 on dev over words; None when there is no dev sentence."""
    if not records:
        return None
    predicted = predict_label_ids(model, examples, [len(r.tokens) for r in records], batch_size, pad_id)
    return strict_f1([list(r.tags) for r in records], [[labels[i] for i in row] for row in predicted])


def threads_per_process(params: TrainParams, processes: engine.Processes) -> int:
    return params.num_threads or max(1, (os.cpu_count() or 1) // processes.local_world)


def run(
    params: TrainParams,
    entity_types: list[str],
    data_dir: Path,
    model_dir: Path,
    metrics_path: Path,
    curve_path: Path,
    checkpoint_dir: Path | None = None,
) -> dict:
    """Fine-tune on data_dir/train.jsonl, select the epoch by dev F1, save it; returns the metrics.

    With a checkpoint_dir, the loop saves resumable state there and a rerun with the same inputs
    continues from it; the state is removed once the model is saved.
    """
    processes = engine.join_processes()
    try:
        return train_and_save(params, entity_types, Path(data_dir), Path(model_dir), Path(metrics_path),
                              Path(curve_path), checkpoint_dir and Path(checkpoint_dir), processes)
    finally:
        engine.leave_processes()


def train_and_save(params, entity_types, data_dir, model_dir, metrics_path, curve_path, checkpoint_dir,
                   processes: engine.Processes) -> dict:
    seed_everything(params.seed)
    torch.set_num_threads(threads_per_process(params, processes))
    labels = label_list(entity_types)
    label2id = {label: i for i, label in enumerate(labels)}
    train_records = load_jsonl(data_dir / "train.jsonl")
    dev_records = load_jsonl(data_dir / "dev.jsonl")
    if not train_records:
        raise ValueError(f"{data_dir}/train.jsonl has no sentences to train on")
    train_labels = label_ids(train_records, label2id)
    label_ids(dev_records, label2id)  # fail before training, not after it

    model, tokenizer = load_model(params, labels)
    device = engine.pick_device(processes)
    engine.configure_device(device)
    model.to(device)
    continuation = continuation_ids(labels) if params.label_all_pieces else None
    train_examples = encode(tokenizer, train_records, params.max_length, train_labels, continuation)
    dev_examples = encode(tokenizer, dev_records, params.max_length)
    steps_per_epoch = -(-len(train_examples) // (params.batch_size * params.gradient_accumulation_steps
                                                  * processes.world))
    loop = engine.make_loop(model, params, device, processes, tokenizer.pad_token_id,
                            steps_per_epoch * params.epochs)
    torch.manual_seed(params.seed + processes.rank)  # dropout masks differ across processes

    def score(trained) -> float | None:
        return dev_f1(trained, dev_examples, dev_records, labels, params.batch_size * 2, tokenizer.pad_token_id)

    identity = checkpoints.fingerprint(params, labels, [data_dir / "train.jsonl", data_dir / "dev.jsonl"]
                                       ) + f"/{processes.world}"
    saved = checkpoints.load(checkpoint_dir, identity)
    progress = engine.fit(loop, train_examples, score, checkpoint_dir, identity, saved)
    if not processes.main:
        return {}
    model.load_state_dict(loop.best_state)
    save_model(plain_model(model), tokenizer, model_dir)
    metrics = training_metrics(progress, params, device, model, len(train_records), bool(dev_records), processes)
    write_json(metrics_path, metrics)
    write_curve(curve_path, progress.curve)
    checkpoints.clear(checkpoint_dir)
    return metrics


def training_metrics(progress: engine.Progress, params: TrainParams, device, model, sentences: int,
                     has_dev: bool, processes: engine.Processes) -> dict:
    return {
        "best_epoch": progress.best_epoch,
        "dev_f1": progress.best_score if has_dev else None,
        "train_seconds": round(progress.seconds, 3),
        "train_sentences": sentences,
        # Real (non-pad) word pieces per second of optimisation, dev scoring and checkpoints excluded.
        "train_tokens_per_second": round(progress.tokens / max(progress.seconds, 1e-9), 1),
        "device": device.type,
        "processes": processes.world,
        "precision": str(engine.choose_precision(params.precision, device).dtype or torch.float32).split(".")[-1],
        "epochs_run": len(progress.curve),
        "stopped_early": progress.stopped_early,
        "optimizer_steps": progress.global_step,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def relaunch_under_torchrun(processes: int, argv: list[str]) -> None:
    """`train.processes: N` from a plain command (dvc repro, the flow): rerun this stage under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "tasks.train", *argv]
    sys.exit(subprocess.run(command, check=False).returncode)


def step(params: Params, _args) -> str:
    data_dir = Path(params.paths.augmented)
    paths = params.paths
    outputs = (data_dir, Path(paths.model), Path(paths.train_metrics), Path(paths.train_plots),
               Path(paths.train_checkpoints))
    if params.task == SEQUENCE_CLASSIFICATION:
        from tasks import textclass, textdata

        train_set = textdata.load_examples(data_dir / "train.jsonl")
        classes = params.validate_.labels or sorted({label for e in train_set for label in e.labels})
        metrics = textclass.fit(params.train, list(classes), *outputs, multi_label=params.multi_label)
        score = f"dev macro-F1 {metrics.get('dev_macro_f1')}"
    else:
        entity_types = params.validate_.entity_types or entity_types_in(load_jsonl(data_dir / "train.jsonl"))
        metrics = run(params.train, entity_types, *outputs)
        score = f"dev_f1 {metrics.get('dev_f1')}"
    if not metrics:
        return "done (rank > 0)"
    return f"best epoch {metrics['best_epoch']} {score} -> {paths.model}"


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
