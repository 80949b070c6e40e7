"""What of a fresh model trains: the kind's model and head from the base encoder, with the word embeddings
or the lowest layers frozen, or LoRA adapters on the attention projections, as `train.*` asks. The same for
every kind; the kind (a tasks.kinds.base.TrainingKind, not imported: the core sits below the kinds) brings
the model and peft's task type."""

from __future__ import annotations

from typing import Any

from tasks import engine
from tasks.params import LoraParams, TrainParams


def load_model(kind: Any, params: TrainParams):
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
