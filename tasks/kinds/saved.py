"""A saved model's kind, and what follows from it: its predictor, its head's class and its loader.

A saved model says its kind itself: `kind_of_model(model_dir)` reads it from config.json (recorded at save),
and `predictor_for(model_dir)` builds that kind's `ModelPredictor`, which is how `flowtune predict` and
`flowtune serve` run any kind without knowing which (docs/DECISIONS.md, 63). This lives beside, not in,
tasks/kinds/__init__.py: every stage imports that package, and a data stage must not depend on the variants
loader (docs/DECISIONS.md, 77). torch and transformers are imported by the functions that use them.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:  # annotations only: the protocols import torch
    from tasks.kinds.base import ModelPredictor

# Windows for a model saved before flowtune recorded its training `max_length` (tasks/saving.py save_best).
DEFAULT_MAX_LENGTH = 128
# The transformers head of each kind: how a model saved before flowtune recorded its kind is recognized.
HEADS = {"ForTokenClassification": "ner", "ForSequenceClassification": "textclass"}


def kind_of_model(model_dir: Path) -> str:
    """The task kind of a saved model (or variant) folder: "ner" | "textclass", as its config.json's `flowtune`
    block records it; a model saved before that was recorded is recognized by its transformers head (the
    one place that looks at `architectures`)."""
    from tasks.params import Kind
    from tasks.variants import flowtune_config, saved_config

    config = saved_config(model_dir)
    known = get_args(Kind)
    recorded = flowtune_config(config).get("task_kind")
    if recorded is not None:
        if recorded not in known:
            raise ValueError(f"{Path(model_dir) / 'config.json'}: flowtune.task_kind {recorded!r} is not one of "
                             f"{', '.join(known)}")
        return recorded
    architectures = config.get("architectures") or []
    for name in architectures:
        for head, kind in HEADS.items():
            if str(name).endswith(head):
                return kind
    raise ValueError(f"{Path(model_dir) / 'config.json'}: records no flowtune.task_kind and its architectures "
                     f"{architectures} name no known head ({', '.join('*' + h for h in HEADS)})")


def trained_max_length(model_dir: Path) -> int:
    """The window length the model was trained with (config.json's `flowtune` block), else the old default."""
    from tasks.variants import flowtune_config, saved_config

    return int(flowtune_config(saved_config(model_dir)).get("max_length", DEFAULT_MAX_LENGTH))


def predictor_for(model_dir: Path, batch_size: int = 32, max_length: int | None = None) -> ModelPredictor:
    """The saved model's predictor, of the kind its config records: `tasks.kinds.<kind>.predict.load(...)`."""
    module = import_module(f"tasks.kinds.{kind_of_model(model_dir)}.predict")
    return module.load(Path(model_dir), batch_size, max_length)


def head_class(model_dir: Path) -> Any:
    """The transformers Auto class of the saved model's head (e.g. AutoModelForTokenClassification), for
    tasks/variants.py's loader and builder."""
    return import_module(f"tasks.kinds.{kind_of_model(model_dir)}.predict").HEAD_CLASS


def load_saved_model(model_dir: Path, device: str | None = None) -> Any:
    """A saved model or variant folder of any kind, ready to predict (tasks/variants.py `load_model` with the
    kind's head)."""
    from tasks.variants import load_model

    return load_model(model_dir, head_class(model_dir), device)
