"""Saving a trained model as a plain transformers folder: the best epoch's weights, LoRA adapters merged,
what flowtune records beside Hugging Face's fields in config.json, written to a temporary sibling folder
that is then renamed into place (a failed save never leaves a half-written model directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks import engine
from tasks.variants import FLOWTUNE_CONFIG_KEY


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


def save_best(loop: engine.Loop, tokenizer, model_dir: Path, max_length: int, task_kind: str) -> None:
    """Save the best epoch's weights (not the last epoch's), LoRA adapters merged, recording in config.json
    the window length it was trained with (`flowtune predict` then windows text the same way) and its task
    kind ("ner" | "textclass": what `tasks.kinds.saved.kind_of_model` reads to load it)."""
    loop.model.load_state_dict(loop.best_state)
    model = plain_model(loop.model)
    setattr(model.config, FLOWTUNE_CONFIG_KEY, {"max_length": max_length, "task_kind": task_kind})
    save_model(model, tokenizer, model_dir)
