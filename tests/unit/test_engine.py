"""The training engine on a tiny random BERT: accumulation, early stopping, LoRA, label variants, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from tasks import checkpoints, engine
from tasks.engine import IGNORE_INDEX
from tasks.io import write_jsonl
from tasks.kinds.ner.modeling import align_labels, continuation_ids
from tasks.kinds.ner.training import token_cross_entropy
from tests.helpers import synthetic, train_ner, train_params

TYPES = ["person", "geo-loc"]
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_jsonl(folder / "train.jsonl", synthetic(48, 1))
    write_jsonl(folder / "dev.jsonl", synthetic(16, 2))
    return folder


def fit(base: Path, data: Path, out: Path, checkpoint_dir: Path | None = None, **overrides) -> dict:
    params = train_params(base, **overrides)
    return train_ner(params, TYPES, data, out / "model", out / "train.json", out / "curve.csv", checkpoint_dir)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def losses(out: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in (out / "curve.csv").read_text().splitlines()[1:]]


def test_micro_batches_share_a_global_batch_across_processes_and_steps() -> None:
    batch = list(range(10))
    two = [engine.micro_batches(batch, engine.Processes(rank=r, world=2), 2) for r in (0, 1)]
    assert two == [[[0, 2, 4], [6, 8]], [[1, 3, 5], [7, 9]]]
    # A share smaller than the accumulation count leaves empty micro-batches (run as zero-weight stand-ins).
    assert engine.micro_batches([0], engine.Processes(rank=0, world=1), 3) == [[0], [], []]
    # With lengths, each process sorts its own share (same rank::world split) before cutting it.
    lengths = {i: 10 - i for i in batch}
    sorted_two = [engine.micro_batches(batch, engine.Processes(rank=r, world=2), 2, lengths) for r in (0, 1)]
    assert sorted_two == [[[8, 6, 4], [2, 0]], [[9, 7, 5], [3, 1]]]


def test_random_or_length_grouped_batches_cover_every_example_once() -> None:
    lengths = [5, 50, 6, 49, 7, 48, 8, 47]
    for grouped in (True, False):
        params = type("P", (), {"batch_size": 2, "gradient_accumulation_steps": 1, "seed": 3,
                                "group_by_length": grouped})()
        batches = engine.global_batches(lengths, params, world=1, epoch=1)
        assert sorted(i for b in batches for i in b) == list(range(8))
        spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
        assert (spread <= 2) == grouped  # grouped: short with short, long with long


def test_precision_choice_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert engine.choose_precision("auto", cpu).dtype is None
    assert engine.choose_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        engine.choose_precision("fp16", cpu)


def test_label_all_pieces_gives_later_pieces_the_inside_label() -> None:
    labels = ["O", "B-person", "I-person"]
    assert continuation_ids(labels) == [0, 2, 2]
    # [CLS] jo ##hn ##ny smith [SEP]: word 0 has three pieces.
    word_ids = [None, 0, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 2], continuation_ids(labels)) == [IGNORE_INDEX, 1, 2, 2, 2, IGNORE_INDEX]
    assert align_labels(word_ids, [1, 2]) == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX]


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_gradient_accumulation_follows_the_same_path_as_one_big_batch(tiny_base, data, tmp_path) -> None:
    # No dropout: the only difference left is how the global batch of 8 is split.
    common = dict(epochs=2, dropout=0.0, learning_rate=5e-3)
    whole = fit(tiny_base, data, tmp_path / "whole", batch_size=8, **common)
    split = fit(tiny_base, data, tmp_path / "split", batch_size=2, gradient_accumulation_steps=4, **common)
    assert whole["optimizer_steps"] == split["optimizer_steps"] == 2 * 6
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "whole"), rel=1e-4)
    a, b = weights(tmp_path / "whole" / "model"), weights(tmp_path / "split" / "model")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def sgd_update(loop: engine.Loop, start: dict, examples: list, batch: list[int], denominator: float | None):
    """The weight change of one train_step from `start`, with plain SGD at lr 1: minus the step's gradient."""
    loop.model.load_state_dict(start)
    engine.train_step(loop, examples, batch, denominator)
    return {k: v - start[k] for k, v in loop.model.state_dict().items()}


def test_a_labelled_piece_weighs_the_same_whatever_its_batch(tiny_base) -> None:
    """With the epoch's constant denominator a step's gradient is the sum of its examples' gradients, so
    a piece in a batch of short sentences counts as much as one in a batch of long ones. Divided by each
    batch's own count (the old way) it is not: length-grouped batches skewed the weights ~3x."""
    from transformers import AutoModelForTokenClassification

    from tasks.engine import Example

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_base, num_labels=3, hidden_dropout_prob=0.0,
                                                            attention_probs_dropout_prob=0.0)
    params = train_params(tiny_base, max_grad_norm=1e9, weight_decay=0.0)
    loop = engine.make_loop(model, params, torch.device("cpu"), engine.Processes(rank=0, world=1), 0, 10,
                            token_cross_entropy)
    loop.optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loop.scheduler = type("Constant", (), {"step": lambda self: None})()
    short = Example(0, [101, 2198, 102], [None, 0, None], [IGNORE_INDEX, 1, IGNORE_INDEX])
    long = Example(1, [101, 2198, 2253, 2000, 3000, 102], [None, 0, 1, 2, 3, None],
                   [IGNORE_INDEX, 1, 0, 0, 2, IGNORE_INDEX])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for denominator, additive in ((2.5, True), (None, False)):
        both = sgd_update(loop, start, [short, long], [0, 1], denominator)
        alone = [sgd_update(loop, start, [short, long], [i], denominator) for i in (0, 1)]
        summed = {k: alone[0][k] + alone[1][k] for k in both}
        assert all(torch.allclose(both[k], summed[k], atol=1e-6) for k in both) == additive


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_dropout_is_applied_while_training(tiny_base, data, tmp_path) -> None:
    """from_pretrained hands back a model in eval mode; the loop must switch it to training mode, or
    `train.dropout` would silently do nothing (it did, before this test)."""
    common = dict(epochs=1, learning_rate=5e-3, batch_size=8)
    fit(tiny_base, data, tmp_path / "off", dropout=0.0, **common)
    fit(tiny_base, data, tmp_path / "on", dropout=0.3, **common)
    assert losses(tmp_path / "on") != pytest.approx(losses(tmp_path / "off"), rel=1e-3)


@pytest.mark.slow  # torch.compile: ~20 s on CPU
def test_compiled_training_follows_the_eager_path(tiny_base, data, tmp_path) -> None:
    """`train.compile: true` (torch.compile, dynamic shapes for dynamic padding) computes the same losses."""
    common = dict(epochs=1, dropout=0.0, learning_rate=5e-3, batch_size=8)
    eager = fit(tiny_base, data, tmp_path / "eager", **common)
    compiled = fit(tiny_base, data, tmp_path / "compiled", compile=True, **common)
    assert compiled["optimizer_steps"] == eager["optimizer_steps"]
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-3)


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 10), (5, 17)])
def test_the_schedule_is_transformers_linear_warmup_then_decay(warmup: int, total: int) -> None:
    """Our own schedule (transformers' one imports its trainer and peft, seconds at every stage start)."""
    from transformers import get_linear_schedule_with_warmup

    def rates(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule, seen = make(optimizer, warmup, total), []
        for _ in range(total + 2):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    assert rates(engine.linear_warmup_then_decay) == pytest.approx(rates(get_linear_schedule_with_warmup))


def test_layer_wise_decay_gives_lower_layers_smaller_learning_rates(tiny_base) -> None:
    """`train.layer_lr_decay`: head at the learning rate, each encoder layer one factor below the one above,
    embeddings lowest; weight decay still skips biases and LayerNorm; 1.0 is one rate for all."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tiny_base, num_labels=3, use_safetensors=True)
    rate = {id(p): (g["lr"], g["weight_decay"]) for g in engine.build_optimizer(model, 1e-3, 0.01, 0.5).param_groups
            for p in g["params"]}
    by_name = {name: rate[id(p)] for name, p in model.named_parameters()}
    assert by_name["classifier.weight"] == (pytest.approx(1e-3), 0.01)
    assert by_name["bert.encoder.layer.1.output.dense.weight"] == (pytest.approx(5e-4), 0.01)  # the top layer
    assert by_name["bert.encoder.layer.0.output.dense.weight"] == (pytest.approx(2.5e-4), 0.01)
    assert by_name["bert.encoder.layer.0.output.dense.bias"] == (pytest.approx(2.5e-4), 0.0)
    assert by_name["bert.embeddings.word_embeddings.weight"] == (pytest.approx(1.25e-4), 0.01)
    assert by_name["bert.embeddings.LayerNorm.weight"] == (pytest.approx(1.25e-4), 0.0)
    flat = engine.build_optimizer(model, 1e-3, 0.01, 1.0).param_groups
    assert {g["lr"] for g in flat} == {1e-3}
    assert sum(len(g["params"]) for g in flat) == len(list(model.parameters()))


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_layer_wise_decay_trains_and_changes_the_embeddings_less(tiny_base, data, tmp_path) -> None:
    common = dict(epochs=1, dropout=0.0, learning_rate=5e-3, batch_size=8)
    fit(tiny_base, data, tmp_path / "flat", **common)
    fit(tiny_base, data, tmp_path / "decayed", layer_lr_decay=0.3, **common)
    start = weights_of_base(tiny_base)["embeddings.word_embeddings.weight"]
    moved = {run: (weights(tmp_path / run / "model")["bert.embeddings.word_embeddings.weight"] - start).abs().sum()
             for run in ("flat", "decayed")}
    assert 0 < moved["decayed"] < moved["flat"] / 3


def weights_of_base(base: Path) -> dict[str, torch.Tensor]:
    return load_file(base / "model.safetensors")


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_frozen_embeddings_stay_as_pretrained_while_the_rest_trains(tiny_base, data, tmp_path) -> None:
    fit(tiny_base, data, tmp_path, epochs=1, dropout=0.0, learning_rate=5e-3, batch_size=8, freeze_embeddings=True)
    start, trained = weights_of_base(tiny_base), weights(tmp_path / "model")
    assert torch.equal(trained["bert.embeddings.word_embeddings.weight"], start["embeddings.word_embeddings.weight"])
    # Only the word embeddings: the position embeddings and every layer above still learn.
    for name in ("embeddings.position_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert not torch.equal(trained[f"bert.{name}"], start[name]), name


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_frozen_layers_keep_the_embeddings_and_the_lowest_layers_as_pretrained(tiny_base, data, tmp_path) -> None:
    fit(tiny_base, data, tmp_path, epochs=1, dropout=0.0, learning_rate=5e-3, batch_size=8, freeze_layers=1)
    start, trained = weights_of_base(tiny_base), weights(tmp_path / "model")
    for name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.LayerNorm.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.0.output.dense.weight"):
        assert torch.equal(trained[f"bert.{name}"], start[name]), name
    for name in ("encoder.layer.1.attention.self.query.weight", "encoder.layer.1.output.dense.weight"):
        assert not torch.equal(trained[f"bert.{name}"], start[name]), name


def test_freezing_more_layers_than_the_encoder_has_names_the_key(tiny_base, data, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"train.freeze_layers 3: the encoder has 2 layers"):
        fit(tiny_base, data, tmp_path, epochs=1, freeze_layers=3)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_early_stopping_stops_when_dev_f1_stalls_and_keeps_the_best_epoch(tiny_base, data, tmp_path) -> None:
    # A learning rate too small to change any prediction: dev F1 never improves after epoch 1.
    metrics = fit(tiny_base, data, tmp_path, epochs=6, learning_rate=1e-12, early_stopping_patience=2)
    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] == 1


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_training_learns_the_synthetic_entities(tiny_base, data, tmp_path) -> None:
    metrics = fit(tiny_base, data, tmp_path, epochs=8, learning_rate=5e-3, batch_size=8)
    assert metrics["dev_f1"] >= 0.8


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_lora_trains_few_parameters_and_saves_a_plain_pipeline_model(tiny_base, data, tmp_path) -> None:
    full = fit(tiny_base, data, tmp_path / "full", epochs=1)
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
    adapted = fit(tiny_base, data, tmp_path / "lora", epochs=1, lora=lora)
    assert adapted["trainable_parameters"] < full["trainable_parameters"] / 3
    saved = weights(tmp_path / "lora" / "model")
    assert not [k for k in saved if "lora" in k]  # adapters merged, nothing peft-specific left
    tagger = pipeline("token-classification", model=str(tmp_path / "lora" / "model"), device="cpu")
    assert all(p["entity"] in {"O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"} for p in tagger("john in paris"))


def test_a_lora_target_the_encoder_lacks_is_an_error_naming_the_param(tiny_base, data, tmp_path) -> None:
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["no_such_layer"]}
    with pytest.raises(ValueError, match="train.lora"):
        fit(tiny_base, data, tmp_path, epochs=1, lora=lora)


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_resuming_from_a_mid_epoch_checkpoint_matches_the_uninterrupted_run(tiny_base, data, tmp_path) -> None:
    settings = dict(epochs=2, batch_size=4, checkpoint_every_steps=5, learning_rate=5e-3)
    reference = fit(tiny_base, data, tmp_path / "ref", **settings)
    folder = tmp_path / "ckpt"

    # Stop the first attempt right after its checkpoint at step 5 (mid epoch 1), as a crash would.
    original_save = engine.save_checkpoint

    def save_then_crash(target, loop, progress, identity):
        original_save(target, loop, progress, identity)
        if progress.global_step == 5:
            raise KeyboardInterrupt("simulated crash")

    engine.save_checkpoint = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(tiny_base, data, tmp_path / "run", checkpoint_dir=folder, **settings)
    finally:
        engine.save_checkpoint = original_save
    saved = torch.load(folder / checkpoints.CHECKPOINT_FILE, weights_only=True)
    assert (saved["progress"]["epoch"], saved["progress"]["step_in_epoch"]) == (1, 5)

    resumed = fit(tiny_base, data, tmp_path / "run", checkpoint_dir=folder, **settings)
    assert resumed["dev_f1"] == pytest.approx(reference["dev_f1"], abs=1e-9)
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "ref"), rel=1e-6)
    a, b = weights(tmp_path / "ref" / "model"), weights(tmp_path / "run" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(folder.iterdir()) == []  # state cleared once the model is saved


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_a_checkpoint_of_other_inputs_is_not_resumed(tiny_base, data, tmp_path) -> None:
    folder = tmp_path / "ckpt"
    checkpoints.save(folder, {"fingerprint": "other inputs", "progress": {"epoch": 99}})
    metrics = fit(tiny_base, data, tmp_path, epochs=1, checkpoint_dir=folder)
    assert metrics["epochs_run"] == 1
    assert json.loads((tmp_path / "train.json").read_text())["optimizer_steps"] == 12
