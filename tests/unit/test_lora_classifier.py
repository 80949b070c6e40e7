"""`train.lora.enabled` for a text classifier: the shared training skeleton wraps any kind's model in
LoRA (it used to be silently ignored for classifiers), and the merged model evaluates like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from tasks import evaluate, train
from tasks.kinds.textclass import records as textdata
from tasks.kinds.textclass.training import TextClassTraining
from tests.helpers import evaluate_params, kind, synthetic_texts, train_params

CLASSES = ["negative", "neutral", "positive"]
LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
ADAPTED = ("attention.self.query.weight", "attention.self.value.weight")  # LoRA merges into these only

pytestmark = pytest.mark.slow  # every test uses the trained classifier (tests/unit/conftest.py)


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny LoRA classifier trained on synthetic sentiment texts: (its folder, train.json)."""
    folder = tmp_path_factory.mktemp("lora-classifier")
    texts = textdata.read_text_examples(synthetic_texts(folder / "texts.csv", 240))
    for split, rows in (("train", texts[:160]), ("dev", texts[160:200]), ("test", texts[200:])):
        textdata.write_examples(folder / "data" / f"{split}.jsonl", rows)
    params = train_params(tiny_base, epochs=3, learning_rate=1e-2, batch_size=8, dropout=0.0, lora=LORA)
    outputs = train.Outputs(folder / "model", folder / "train.json", folder / "curve.csv")
    return folder, train.fit(TextClassTraining(CLASSES), params, folder / "data", outputs)


def test_only_the_adapters_and_the_head_train(trained) -> None:
    _, metrics = trained
    hidden, layers, r = 32, 2, LORA["r"]  # tests.helpers.tiny_encoder
    adapters = layers * len(LORA["target_modules"]) * r * (hidden + hidden)  # A: r x in, B: out x r
    head = hidden * len(CLASSES) + len(CLASSES)
    assert metrics["trainable_parameters"] == adapters + head


def test_the_base_encoder_is_untouched_but_where_adapters_merged(trained, tiny_base: Path) -> None:
    folder, _ = trained
    base = load_file(tiny_base / "model.safetensors")
    saved = load_file(folder / "model" / "model.safetensors")
    assert not [k for k in saved if "lora" in k]  # adapters merged: a plain transformers model
    changed = {k for k, tensor in base.items() if not tensor.equal(saved[f"bert.{k}"])}
    assert changed == {k for k in base if k.endswith(ADAPTED)} and len(changed) == 4  # 2 layers x query, value


def test_it_learns_and_the_saved_model_evaluates(trained) -> None:
    folder, metrics = trained
    losses = [float(line.split(",")[1]) for line in (folder / "curve.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0] and metrics["dev_macro_f1"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(folder / "model")
    assert model.config.id2label == dict(enumerate(CLASSES))
    result = evaluate.run(evaluate_params(), folder / "model", folder / "data/test.jsonl", folder / "eval.json",
                          folder / "predictions.jsonl", 16, None, kind=kind("sequence-classification"))
    assert result.task == "sequence-classification" and result.count == 40
    assert 0 <= result.headline.value <= 1 and set(result.groups) == set(CLASSES)
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 40 and set(predictions[0]["probabilities"]) == set(CLASSES)
