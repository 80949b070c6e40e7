"""Train step: fine-tune a BERT-style encoder for IOB2 token classification.

A plain PyTorch loop (AdamW, linear warmup then decay, gradient clipping). After each epoch the
model is scored on dev with seqeval strict IOB2 entity F1 over words; the best epoch's weights are
saved (safetensors + tokenizer) into a temporary sibling folder that is then renamed into place, so a
failed run never leaves a half-written model directory.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

from tasks.iob import label_list, split_tag
from tasks.modeling import (
    Example,
    autocast,
    build_examples,
    collate,
    encode_words,
    length_grouped_batches,
    predict_label_ids,
    resolve_base_model,
    strict_f1,
)
from tasks.params import Params, TrainParams
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


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (decaying them only hurts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_epoch(
    model, examples: Sequence[Example], optimizer, scheduler, params: TrainParams, epoch: int, pad_id: int
) -> tuple[float, int]:
    """One pass over the cached examples. Returns (mean batch loss, real non-pad tokens seen)."""
    device = next(model.parameters()).device
    model.train()
    losses, tokens = [], 0
    batches = length_grouped_batches(
        [len(e.input_ids) for e in examples], params.batch_size, params.seed + epoch
    )
    for indices in batches:
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in indices], pad_id).items()}
        with autocast(device):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
    return float(np.mean(losses)) if losses else 0.0, tokens


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
    """The base encoder with a fresh token-classification head for `labels`, and its fast tokenizer."""
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
    return model, tokenizer


@dataclass
class Fit:
    """What the epoch loop leaves behind: the curve, the selected epoch and its weights."""

    curve: list[tuple[int, float, float | None]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    best_state: dict | None = None
    step_seconds: float = 0.0
    tokens: int = 0


def encode(
    tokenizer, records: Sequence[NerRecord], max_length: int, labels: list[list[int]] | None = None
) -> list[Example]:
    """Tokenize once into cached windows; every epoch reuses them."""
    return build_examples(tokenizer, encode_words(tokenizer, [r.tokens for r in records]), max_length, labels)


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


def fit(
    model,
    tokenizer,
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example],
    dev_records: Sequence[NerRecord],
    labels: list[str],
    params: TrainParams,
    sentences: int,
) -> Fit:
    """The epoch loop: train, score dev, keep a CPU copy of the best epoch's weights."""
    pad_id = tokenizer.pad_token_id
    optimizer = build_optimizer(model, params.learning_rate, params.weight_decay)
    total_steps = -(-len(train_examples) // params.batch_size) * params.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(params.warmup_ratio * total_steps), total_steps
    )
    result = Fit()
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        loss, tokens = train_epoch(model, train_examples, optimizer, scheduler, params, epoch, pad_id)
        seconds = time.perf_counter() - started
        result.step_seconds += seconds
        result.tokens += tokens
        f1 = dev_f1(model, dev_examples, dev_records, labels, params.batch_size * 2, pad_id)
        result.curve.append((epoch, loss, f1))
        shown = "n/a" if f1 is None else f"{f1:.4f}"
        print(
            f"train: epoch {epoch}/{params.epochs} loss {loss:.4f} dev_f1 {shown} "
            f"{sentences / seconds:.1f} sentences/s",
            flush=True,
        )
        # Without dev sentences there is nothing to select on: the last epoch wins.
        score = f1 if f1 is not None else float(epoch)
        if score > result.best_score:
            result.best_epoch, result.best_score = epoch, score
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return result


def run(
    params: TrainParams,
    entity_types: list[str],
    data_dir: Path,
    model_dir: Path,
    metrics_path: Path,
    curve_path: Path,
) -> dict:
    """Fine-tune on data_dir/train.jsonl, select the epoch by dev F1, save it; returns the metrics."""
    seed_everything(params.seed)
    torch.set_num_threads(params.num_threads or os.cpu_count() or 1)
    labels = label_list(entity_types)
    label2id = {label: i for i, label in enumerate(labels)}
    train_records = load_jsonl(Path(data_dir) / "train.jsonl")
    dev_records = load_jsonl(Path(data_dir) / "dev.jsonl")
    if not train_records:
        raise ValueError(f"{data_dir}/train.jsonl has no sentences to train on")
    train_labels = label_ids(train_records, label2id)
    label_ids(dev_records, label2id)  # fail before training, not after it

    model, tokenizer = load_model(params, labels)
    device = pick_device()
    model.to(device)
    train_examples = encode(tokenizer, train_records, params.max_length, train_labels)
    dev_examples = encode(tokenizer, dev_records, params.max_length)
    started = time.perf_counter()
    result = fit(
        model, tokenizer, train_examples, dev_examples, dev_records, labels, params, len(train_records)
    )
    train_seconds = time.perf_counter() - started

    model.load_state_dict(result.best_state)
    save_model(model, tokenizer, model_dir)
    metrics = {
        "best_epoch": result.best_epoch,
        "dev_f1": result.best_score if dev_records else None,
        "train_seconds": round(train_seconds, 3),
        "train_sentences": len(train_records),
        # Real (non-pad) word pieces per second of optimisation, dev scoring excluded.
        "train_tokens_per_second": round(result.tokens / result.step_seconds, 1),
        "device": device.type,
        "epochs_run": len(result.curve),
    }
    write_json(metrics_path, metrics)
    write_curve(curve_path, result.curve)
    return metrics


def step(params: Params, _args) -> str:
    data_dir = Path(params.paths.augmented)
    entity_types = params.validate_.entity_types or entity_types_in(load_jsonl(data_dir / "train.jsonl"))
    paths = params.paths
    metrics = run(params.train, entity_types, data_dir, Path(paths.model), Path(paths.train_metrics),
                  Path(paths.train_plots))
    return f"best epoch {metrics['best_epoch']} dev_f1 {metrics['dev_f1']} -> {paths.model}"


def main(argv: list[str] | None = None) -> None:
    run_stage("train", step, argv)


if __name__ == "__main__":
    main()
