"""Text classification: reading CSV/JSONL, the NER-derived task, metrics, and training on the shared engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tasks import train
from tasks.io import InputFormatError
from tasks.kinds import kind_for
from tasks.kinds.ner.records import NerRecord
from tasks.kinds.textclass import modeling as textclass
from tasks.kinds.textclass import records as textdata
from tasks.kinds.textclass.modeling import expected_calibration_error, scores
from tasks.kinds.textclass.records import TextExample, mentions, read_text_examples
from tasks.kinds.textclass.training import TextClassTraining
from tasks.metrics import EvalReport
from tasks.params import load_params
from tests.helpers import NAMES, PLACES, ROOT, kind, train_params


def test_csv_and_jsonl_with_configurable_columns(tmp_path: Path):
    (tmp_path / "a.csv").write_text('review,stars\n"great, loved it",pos\nawful,neg\n')
    (tmp_path / "b.jsonl").write_text('{"id": "x1", "body": "fine", "y": 3}\n\n{"body": "meh", "y": "2"}\n')
    assert read_text_examples(tmp_path / "a.csv", "review", "stars") == [
        TextExample("a:2", "great, loved it", "pos"), TextExample("a:3", "awful", "neg")]
    assert [(e.id, e.text, e.label) for e in read_text_examples(tmp_path / "b.jsonl", "body", "y")] == [
        ("x1", "fine", "3"), ("b:3", "meh", "2")]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("no_label.csv", "text\nhello\n", r"no_label.csv:2: no 'label' column"),
    ("empty.csv", "text,label\n  ,pos\n", r"empty.csv:2: 'text' must be non-empty text"),
    ("list.jsonl", '{"text": "a", "label": ["x", "y"]}\n', r"list.jsonl:1: 'label' must be one label"),
    ("broken.jsonl", '{"text": "a", "label": "x"}\n{"text": \n', r"broken.jsonl:2: not valid JSON"),
    ("data.txt", "a\tb\n", r"data.txt: expected a .csv or .jsonl file"),
    ("nothing.csv", "text,label\n", r"nothing.csv: no examples"),
])
def test_bad_files_name_the_line_and_what_was_expected(tmp_path: Path, name: str, content: str, message: str):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputFormatError, match=message):
        read_text_examples(tmp_path / name)


def test_unlabelled_texts_read_from_txt_csv_and_jsonl(tmp_path: Path):
    (tmp_path / "u.txt").write_text("so  good\n\nmeh\n")
    (tmp_path / "u.csv").write_text("label,text\npos,so good\n,meh\n")
    (tmp_path / "u.jsonl").write_text('{"text": "so good"}\n{"text": "meh", "label": "neg"}\n')
    for name in ("u.txt", "u.csv", "u.jsonl"):
        sentences = textdata.read_unlabelled(tmp_path / name)
        assert [(s.tokens, s.tags) for s in sentences] == [(("so", "good"), ("O", "O")), (("meh",), ("O",))], name
    assert [s.id for s in textdata.read_unlabelled(tmp_path / "u.txt")] == ["u:1", "u:3"]  # file and line
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(InputFormatError, match="bad.jsonl:2"):
        textdata.read_unlabelled(tmp_path / "bad.jsonl")


def test_mentions_derives_a_task_from_ner_records():
    records = [NerRecord("1", ("john", "is", "here"), ("B-person", "O", "O")),
               NerRecord("2", ("in", "new", "york"), ("O", "B-geo-loc", "I-geo-loc")),
               NerRecord("3", ("mr", "jo", "smith"), ("O", "B-person", "I-person"))]
    assert [(e.text, e.label) for e in mentions(records, "person")] == [
        ("john is here", "person"), ("in new york", "none"), ("mr jo smith", "person")]


def test_scores_on_a_handwritten_case():
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    result = scores(gold, predicted, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                        "support": 3}
    assert result["per_class"]["b"]["precision"] == 0.5 and result["per_class"]["b"]["recall"] == 0.5
    assert result["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result["confusion"]["a"] == {"a": 2, "b": 1, "c": 0} and result["confusion"]["b"]["c"] == 1


def test_a_class_never_predicted_scores_zero_not_an_error():
    result = scores(["a", "b"], ["a", "a"], ["a", "b"])
    assert result["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_expected_calibration_error():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.9] * 4, [True, False, True, False]) == pytest.approx(0.4)
    # two bins: 0.95 (right twice) -> |1 - 0.95| ; 0.25 (right once in two) -> |0.5 - 0.25|
    assert expected_calibration_error([0.95, 0.95, 0.25, 0.25], [True, True, True, False]) == pytest.approx(
        0.5 * 0.05 + 0.5 * 0.25)


def sentences(count: int, seed: int) -> list[TextExample]:
    """'<name> ...' is about a person, '<place> ...' is not: a tiny model learns it in a few epochs."""
    import random

    rng, rows = random.Random(seed), []
    for i in range(count):
        person = i % 2 == 0
        head = rng.choice(NAMES if person else PLACES)
        verb = rng.choice(["is", "was", "looks"])
        label = "person" if person else "none"
        rows.append(TextExample(f"{seed}:{i}", f"{head} {verb} great today and every day", label))
    return rows


def train_classifier(params, labels: list[str], folder: Path, multi_label: bool = False) -> dict:
    """The train step's fit for a classifier on folder/data; model, train.json and curve.csv in folder."""
    outputs = train.Outputs(folder / "model", folder / "train.json", folder / "curve.csv")
    return train.fit(TextClassTraining(labels, multi_label), params, folder / "data", outputs)


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_a_sequence_classifier_trains_on_the_shared_engine(tmp_path: Path, tiny_base: Path):
    textdata.write_examples(tmp_path / "data/train.jsonl", sentences(64, 1))
    textdata.write_examples(tmp_path / "data/dev.jsonl", sentences(16, 2))
    params = train_params(tiny_base, epochs=4, learning_rate=5e-3, batch_size=8, max_length=8)
    metrics = train_classifier(params, ["none", "person"], tmp_path)
    assert metrics["dev_macro_f1"] >= 0.9 and metrics["truncated_texts"] == 64  # 10 pieces > max_length 8
    assert json.loads((tmp_path / "train.json").read_text())["best_epoch"] == metrics["best_epoch"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert model.config.id2label == {0: "none", 1: "person"}
    classify = pipeline("text-classification", model=str(tmp_path / "model"))
    assert classify("john is great today")[0]["label"] == "person"
    assert classify("paris was great today")[0]["label"] == "none"


def with_class_weight(tmp_path: Path, rows: list[TextExample], labels: list[str], multi_label: bool = False):
    """The training pieces of params-sentiment.yaml with `train.class_weight: balanced`, on these train rows."""
    textdata.write_examples(tmp_path / "train.jsonl", rows)
    params = load_params(ROOT / "params-sentiment.yaml")
    params = params.model_copy(update={
        "task": params.task.model_copy(update={"labels": labels, "multi_label": multi_label}),
        "train": params.train.model_copy(update={"class_weight": "balanced"})})
    return kind_for(params).training(tmp_path / "train.jsonl")


def test_balanced_class_weights_give_every_class_the_same_total_weight(tmp_path: Path):
    rows = [TextExample(str(i), f"text {i}", label) for i, label in enumerate(["a"] * 6 + ["b"] * 3 + ["c"])]
    training = with_class_weight(tmp_path, rows, ["a", "b", "c", "d"])
    assert training.class_weights == pytest.approx((10 / 24, 10 / 12, 10 / 4, 1.0))  # d: not in train, weight 1
    totals = [count * weight for count, weight in zip((6, 3, 1), training.class_weights, strict=False)]
    assert totals == pytest.approx([2.5, 2.5, 2.5])
    # Multi-label: each class's positives weigh its negatives / positives (BCE's pos_weight).
    sets = [TextExample(str(i), f"text {i}", label) for i, label in enumerate(["a|b", "a", "a", ""])]
    assert with_class_weight(tmp_path, sets, ["a", "b"], multi_label=True).class_weights == pytest.approx((1 / 3, 3.0))


def test_class_weight_none_leaves_the_loss_unweighted(tmp_path: Path):
    assert kind("sequence-classification").training(tmp_path / "absent.jsonl").class_weights is None


def test_the_weighted_loss_weighs_each_text_by_its_class():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.3, 0.1]]), torch.tensor([[0], [2]])
    per_text = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")
    assert TextClassTraining(["a", "b", "c"]).loss(logits, labels) == pytest.approx(float(per_text.sum()))
    weighted = TextClassTraining(["a", "b", "c"], class_weights=(0.5, 1.0, 3.0)).loss(logits, labels)
    assert weighted == pytest.approx(float(0.5 * per_text[0] + 3.0 * per_text[1]))
    # Multi-label: the positives of class b (weight 4) cost 4x, the negatives as before.
    sets, targets = torch.tensor([[1.0, -1.0]]), torch.tensor([[0, 1]])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(sets, targets.float(), reduction="none")[0]
    weighted = TextClassTraining(["a", "b"], multi_label=True, class_weights=(1.0, 4.0)).loss(sets, targets)
    assert weighted == pytest.approx(float(plain[0] + 4.0 * plain[1]))


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_train_json_reports_the_class_weights_it_trained_with(tmp_path: Path, tiny_base: Path):
    textdata.write_examples(tmp_path / "data/train.jsonl", sentences(24, 1)[:20])  # 10 person, 10 none
    textdata.write_examples(tmp_path / "data/dev.jsonl", sentences(8, 2))
    params = train_params(tiny_base, epochs=1, batch_size=8, max_length=12)
    outputs = train.Outputs(tmp_path / "model", tmp_path / "train.json", tmp_path / "curve.csv")
    train.fit(TextClassTraining(["none", "person"], class_weights=(1.0, 1.0)), params, tmp_path / "data", outputs)
    assert json.loads((tmp_path / "train.json").read_text())["class_weights"] == {"none": 1.0, "person": 1.0}


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_the_evaluate_stage_scores_a_classifier_and_writes_its_confusion_plot(tmp_path: Path, tiny_base: Path):
    from tasks import evaluate
    from tasks.params import load_params
    from tests.helpers import ROOT

    textdata.write_examples(tmp_path / "data/train.jsonl", sentences(64, 1))
    textdata.write_examples(tmp_path / "data/dev.jsonl", sentences(16, 2))
    textdata.write_examples(tmp_path / "data/test.jsonl", sentences(20, 3))
    params = train_params(tiny_base, epochs=4, learning_rate=5e-3, batch_size=8, max_length=16, dropout=0.0)
    train_classifier(params, ["none", "person"], tmp_path)
    evaluate_params = load_params(ROOT / "params-sentiment.yaml").evaluate.model_copy(update={"latency_sentences": 5})
    report = evaluate.run(evaluate_params, tmp_path / "model", tmp_path / "data/test.jsonl", tmp_path / "eval.json",
                          tmp_path / "predictions.jsonl", 16, tmp_path / "confusion.csv",
                          kind=kind("sequence-classification"))
    assert (report.task, report.headline.name, report.unit, report.group) == \
        ("sequence-classification", "macro-F1", "text", "class")
    assert report.headline.value == report.details["macro_f1"] >= 0.9 and report.details["multi_label"] is False
    assert report.count == 20 and set(report.groups) == {"none", "person"} and report.behaviour is None
    assert report.latency.sentences == 5 and report.model_size_mb > 0
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["calibration"]["ece"] == report.calibration.ece and written["f1"] == report.headline.value
    assert EvalReport.read(tmp_path / "eval.json") == report
    rows = (tmp_path / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 21
    hits = sum(1 for row in rows[1:] if row.split(",")[0] == row.split(",")[1])
    assert hits == round(report.details["accuracy"] * 20)
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert predictions[0]["id"] == "3:0" and set(predictions[0]["probabilities"]) == {"none", "person"}
    assert abs(sum(predictions[0]["probabilities"].values()) - 1) < 1e-4


def test_a_test_label_the_model_does_not_know_is_named(tmp_path: Path, tiny_base: Path):
    from tasks import evaluate
    from tasks.params import load_params
    from tests.helpers import ROOT

    model, tokenizer = textclass.load_classifier(train_params(tiny_base), ["none", "person"])
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    textdata.write_examples(tmp_path / "test.jsonl", [TextExample("x:1", "john is here", "place")])
    params = load_params(ROOT / "params-sentiment.yaml").evaluate
    with pytest.raises(ValueError, match=r"example x:1: label 'place' is not a class of the model"):
        evaluate.run(params, tmp_path / "model", tmp_path / "test.jsonl", tmp_path / "eval.json",
                     tmp_path / "p.jsonl", 16, None, kind=kind("sequence-classification"))
    assert not (tmp_path / "eval.json").exists()


def test_multilabel_scores_by_hand():
    gold = ["person|place", "person", "", "place"]
    predicted = ["person", "person", "place", "place"]
    result = textclass.multilabel_scores(gold, predicted, ["person", "place"])
    assert result["confusion"]["person"] == {"tp": 2, "fp": 0, "fn": 0, "tn": 2}
    assert result["confusion"]["place"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert result["per_class"]["person"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert result["per_class"]["place"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result["macro_f1"] == pytest.approx(0.75) and result["micro_f1"] == pytest.approx(6 / 8)
    assert result["accuracy"] == 0.5  # exact label sets: the 2nd and the 4th


def mentions_both(count: int, seed: int) -> list[TextExample]:
    """Texts with a name, a place, both or neither; labelled with what they mention (multi-label)."""
    import random

    rng, rows = random.Random(seed), []
    for i in range(count):
        person, place = i % 2 == 0, (i // 2) % 2 == 0  # all four combinations, equally often
        words = [rng.choice(NAMES) if person else "someone", rng.choice(PLACES) if place else "somewhere"]
        label = "|".join(label for label, on in (("person", person), ("place", place)) if on)
        rows.append(TextExample(f"{seed}:{i}", " ".join(words), label))
    return rows


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_a_multi_label_classifier_learns_label_sets_and_predict_serves_it(tmp_path: Path, tiny_base: Path, capsys):
    """A tiny random encoder learns one of the two labels reliably and often both, so the bar is "far
    above chance" (both labels at chance: 0.5); predict must serve exactly the model's own label sets."""
    from flows.cli.main import main as flowtune

    textdata.write_examples(tmp_path / "data/train.jsonl", mentions_both(160, 1))
    textdata.write_examples(tmp_path / "data/dev.jsonl", mentions_both(24, 2))
    params = train_params(tiny_base, epochs=8, learning_rate=1e-2, batch_size=8, max_length=16, dropout=0.0)
    metrics = train_classifier(params, ["person", "place"], tmp_path, multi_label=True)
    assert metrics["dev_macro_f1"] >= 0.7
    losses = [float(line.split(",")[1]) for line in (tmp_path / "curve.csv").read_text().splitlines()[1:]]
    assert losses[-1] < 0.6 * losses[0]  # binary cross-entropy starts near ln 2 = 0.69 per decision

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert textclass.is_multi_label(model)
    check = mentions_both(12, 3)
    encoded, _ = textclass.encode_texts(tokenizer, check, 16)
    probabilities = textclass.predict_proba(model, encoded, 4, tokenizer.pad_token_id)
    assert probabilities.shape == (12, 2) and not torch.allclose(probabilities.sum(dim=1), torch.ones(12))  # sigmoid
    expected = textclass.predicted_labels(probabilities, ["person", "place"], True)
    scored = textclass.classification_metrics([e.label for e in check], probabilities, ["person", "place"], True)

    (tmp_path / "check.jsonl").write_text("".join(json.dumps({"text": e.text, "label": list(e.labels)}) + "\n"
                                                  for e in check))
    capsys.readouterr()  # the training's progress lines
    assert flowtune(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "check.jsonl"),
                     "--format", "jsonl"]) == 0
    out = capsys.readouterr()
    assert [json.loads(line)["label"] for line in out.out.splitlines()] == expected
    assert f"gold labels in the input: macro-F1 {scored['f1']:.4f}, accuracy {scored['accuracy']:.4f} on 12" in out.err
    assert flowtune(["predict", "--model", str(tmp_path / "model"), check[0].text]) == 0
    label, shown, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert (label, text) == (expected[0] or "(none)", check[0].text)
