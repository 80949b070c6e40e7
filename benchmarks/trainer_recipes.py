"""The Hugging Face Trainer recipe per task kind, on a folder of cleaned splits (benchmarks/augment_ablation.py).

Each recipe fine-tunes the params' base model with transformers' `Trainer` (random batches, dynamic padding,
the params' learning rate, epochs, batch size, warmup, weight decay, clipping, dropout and seed), keeps the
last epoch's weights, and scores dev and test the way the reference scripts do:
- ner: run_ner.py (labels on first pieces, truncation; strict IOB2 entity F1 over words), the hf-trainer mode
  of benchmarks/train_speed.py;
- textclass: run_glue.py (one label per text; macro-F1 over the classes), single-label only.

Each returns (test score, dev score, training seconds, train rows).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.train_speed import run_hf_trainer, seed_everything, trainer_arguments
from tasks.basemodel import resolve_base_model
from tasks.iob import label_list, split_tag

Score = tuple[float, float, float, int]


def ner_recipe(data: Path, params, train_params) -> Score:
    from tasks.kinds.ner.records import load_jsonl

    splits = {split: load_jsonl(data / f"{split}.jsonl") for split in ("train", "dev", "test")}
    types = set(params.task.labels) | {split_tag(t)[1] for rows in splits.values() for r in rows for t in r.tags}
    result = run_hf_trainer(train_params, splits, label_list(sorted(types - {None})), torch.device("cpu"))
    return result["test_f1"], result["dev_f1"], result["train_seconds"], len(splits["train"])


def textclass_recipe(data: Path, params, train_params) -> Score:
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    from tasks.kinds.textclass.records import load_examples

    if params.task.multi_label:
        raise SystemExit("the textclass Trainer recipe is single-label only (task.multi_label: false)")
    splits = {split: load_examples(data / f"{split}.jsonl") for split in ("train", "dev", "test")}
    labels = list(params.task.labels) or sorted({e.label for e in splits["train"]})
    label_ids = {label: i for i, label in enumerate(labels)}
    seed_everything(train_params.seed)  # the same classification head for every seed's run
    base = resolve_base_model(train_params.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids,
        hidden_dropout_prob=train_params.dropout, attention_probs_dropout_prob=train_params.dropout,
        use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(base)

    def features(split: str) -> list[dict]:
        encoded = tokenizer([e.text for e in splits[split]], truncation=True, max_length=train_params.max_length)
        return [{key: encoded[key][i] for key in encoded.keys()} | {"labels": label_ids[e.label]}
                for i, e in enumerate(splits[split])]

    train_features = features("train")
    steps = -(-len(train_features) // train_params.batch_size) * train_params.epochs
    with tempfile.TemporaryDirectory(prefix="trainer_recipe-") as tmp:
        trainer = Trainer(model=model, args=trainer_arguments(tmp, train_params, steps, torch.device("cpu")),
                          train_dataset=train_features, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started

        def macro_f1(split: str) -> float:
            predicted = trainer.predict(features(split)).predictions.argmax(-1)
            gold = [label_ids[e.label] for e in splits[split]]
            return float(f1_score(gold, predicted, average="macro", labels=list(range(len(labels))), zero_division=0))

        return macro_f1("test"), macro_f1("dev"), seconds, len(train_features)


RECIPES = {"ner": ner_recipe, "textclass": textclass_recipe}
