"""train.fit + evaluate.run end to end on tiny handwritten data and a tiny random BERT (seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import AutoModelForTokenClassification

from tasks import evaluate, saving
from tasks.io import write_jsonl
from tasks.kinds.ner.records import NerRecord
from tasks.kinds.saved import DEFAULT_MAX_LENGTH, kind_of_model, trained_max_length
from tasks.metrics import EvalReport
from tests.helpers import evaluate_params, kind, train_ner, train_params

TYPES = ["person", "geo-loc"]

SENTENCES = [
    (["john", "lives", "in", "paris"], ["B-person", "O", "O", "B-geo-loc"]),
    (["mary", "smith", "visited", "new", "york"], ["B-person", "I-person", "O", "B-geo-loc", "I-geo-loc"]),
    (["we", "love", "london"], ["O", "O", "B-geo-loc"]),
    (["bob", "says", "hi"], ["B-person", "O", "O"]),
    (["nothing", "to", "see", "here"], ["O", "O", "O", "O"]),
    (["alice", "flew", "to", "berlin", "today"], ["B-person", "O", "O", "B-geo-loc", "O"]),
    (["rome", "is", "hot"], ["B-geo-loc", "O", "O"]),
    (["ask", "peter", "parker"], ["O", "B-person", "I-person"]),
]


def write_split(folder: Path, name: str, rows: list[tuple[list[str], list[str]]]) -> None:
    records = [NerRecord(f"{name}:{i}", tuple(t), tuple(g)) for i, (t, g) in enumerate(rows)]
    write_jsonl(folder / f"{name}.jsonl", records)


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_train_then_evaluate_writes_loadable_model_and_metrics(tiny_base: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = SENTENCES * 2 + [([f"w{i}" for i in range(30)], ["O"] * 30)]  # one sentence needs windows
    write_split(data, "train", rows)
    write_split(data, "dev", SENTENCES[:4])
    write_split(data, "test", SENTENCES[4:] + rows[-1:])
    out = tmp_path / "out"

    metrics = train_ner(
        train_params(tiny_base), TYPES, data, out / "model", out / "train.json", out / "curve.csv"
    )

    assert set(metrics) >= {
        "best_epoch",
        "dev_f1",
        "train_seconds",
        "train_sentences",
        "train_tokens_per_second",
        "device",
        "epochs_run",
    }
    assert json.loads((out / "train.json").read_text()) == metrics
    assert metrics["train_sentences"] == len(rows) and metrics["epochs_run"] == 2
    with (out / "curve.csv").open() as handle:
        curve = list(csv.DictReader(handle))
    assert [row["epoch"] for row in curve] == ["1", "2"]
    assert set(curve[0]) == {"epoch", "train_loss", "dev_f1"}
    model = AutoModelForTokenClassification.from_pretrained(out / "model")
    assert model.config.id2label[1] == "B-person"
    assert (out / "model" / "model.safetensors").is_file()
    assert not list(out.glob(".model.*"))  # no staging folder left behind
    assert trained_max_length(out / "model") == 16  # recorded in config.json: `flowtune predict` windows the same
    assert kind_of_model(out / "model") == "ner"  # recorded too: predict and serve load it as what it is

    result = evaluate.run(
        evaluate_params(),
        out / "model",
        data / "test.jsonl",
        out / "eval.json",
        out / "pred.jsonl",
        16,
        kind=kind(),
    )
    assert result == EvalReport.read(out / "eval.json")
    assert set(json.loads((out / "eval.json").read_text())) == {
        "task", "title", "predicts", "headline", "f1", "precision", "recall", "unit", "count", "group", "groups",
        "f1_default", "precision_default", "recall_default", "token_accuracy", "confusion", "slices", "behaviour",
        "latency", "model_size_mb",
    }
    assert (result.task, result.headline.name, result.unit, result.group) == \
        ("token-classification", "strict entity F1", "sentence", "entity type")
    assert result.calibration is None
    gold_entities = sum(row.support for row in result.groups.values())
    assert sum(n for row, counts in result.confusion.items() if row != "(spurious)" for n in counts.values()) \
        == gold_entities  # every gold entity lands in exactly one cell
    assert sum(s["sentences"] for s in result.slices["length"].values()) == 5
    assert result.latency.sentences == 3 and result.latency.p95_ms >= result.latency.p50_ms > 0
    functionality = result.behaviour.minimum_functionality
    # Only person/geo-loc/no-entity sentences apply to this model; the other types are skipped.
    assert (functionality.cases, functionality.skipped) == (12, 6)
    assert len(functionality.failed_ids) == functionality.cases - functionality.passed
    assert result.model_size_mb > 0
    assert result.count == 5
    predictions = [json.loads(line) for line in (out / "pred.jsonl").read_text().splitlines()]
    assert all(len(p["predicted"]) == len(p["tokens"]) == len(p["tags"]) for p in predictions)
    assert {"id", "tokens", "tags", "predicted"} == set(predictions[0])


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_overfitting_a_few_sentences_reaches_high_dev_f1(tiny_base: Path, tmp_path: Path) -> None:
    # dev = train: if labels were misaligned with first pieces, memorising could not score well.
    write_split(tmp_path, "train", SENTENCES)
    write_split(tmp_path, "dev", SENTENCES)
    params = train_params(
        tiny_base, epochs=30, learning_rate=5e-3, batch_size=4, dropout=0.0, warmup_ratio=0.0
    )
    metrics = train_ner(params, TYPES, tmp_path, tmp_path / "m", tmp_path / "t.json", tmp_path / "c.csv")
    assert metrics["dev_f1"] >= 0.9


def test_unknown_tag_is_an_error_naming_the_record(tiny_base: Path, tmp_path: Path) -> None:
    write_split(tmp_path, "train", [(["x"], ["B-company"])])
    write_split(tmp_path, "dev", SENTENCES[:1])
    with pytest.raises(ValueError, match=r"train:0.*B-company"):
        train_ner(
            train_params(tiny_base), TYPES, tmp_path, tmp_path / "m", tmp_path / "t.json", tmp_path / "c.csv"
        )
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_evaluate_rejects_tags_unknown_to_the_model(tiny_base: Path, tmp_path: Path) -> None:
    write_split(tmp_path, "train", SENTENCES)
    write_split(tmp_path, "dev", SENTENCES)
    write_split(tmp_path, "test", [(["acme"], ["B-company"])])
    train_ner(
        train_params(tiny_base, epochs=1),
        TYPES,
        tmp_path,
        tmp_path / "m",
        tmp_path / "t.json",
        tmp_path / "c.csv",
    )
    with pytest.raises(ValueError, match=r"test:0.*B-company"):
        evaluate.run(
            evaluate_params(),
            tmp_path / "m",
            tmp_path / "test.jsonl",
            tmp_path / "e.json",
            tmp_path / "p.jsonl",
            16,
            kind=kind(),
        )


class _Saves:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def save_pretrained(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "new.json").write_text("{}")
        if self.fail:
            raise OSError("disk full")


def test_failed_save_keeps_the_previous_model_and_no_partial_dir(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "old.json").write_text("{}")
    with pytest.raises(OSError, match="disk full"):
        saving.save_model(_Saves(fail=False), _Saves(fail=True), model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in model_dir.iterdir()] == ["old.json"]
    saving.save_model(_Saves(fail=False), _Saves(fail=False), model_dir)
    assert [p.name for p in model_dir.iterdir()] == ["new.json"]


def test_a_model_saved_before_max_length_was_recorded_gets_the_old_default(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForTokenClassification"]}))
    assert trained_max_length(tmp_path) == DEFAULT_MAX_LENGTH
