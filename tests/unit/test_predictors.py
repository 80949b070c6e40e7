"""Inference through the task-kind seam: a saved model's kind comes from its config (`kind_of_model`, with the
old `architectures` rule for models saved before), and `predictor_for` gives that kind's predictor, whose
answers, per-item statistics (`describe`, also from another thread while `predict` runs), readers, writers
and scores are checked on tiny models of each kind."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from tasks.kinds.ner.predict import entity_types
from tasks.kinds.saved import kind_of_model, predictor_for, trained_max_length
from tasks.textstats import piece_statistics, text_statistics

TAGS = ["O", "B-person", "I-person", "B-loc", "I-loc"]
CLASSES = ["negative", "neutral", "positive"]
STAT_KEYS = {"words", "chars", "pieces", "unknown_pieces", "fragmented_words", "urls", "emoji", "non_latin",
             "upper_words", "confidence", "min_confidence", "predicted"}
TEXT = "Alice met BOB at https://x.org/a?b=1 😀 in Москва"


def saved(base: Path, folder: Path, head: str, labels: list[str], record: dict | None = None,
          multi_label: bool = False) -> Path:
    """A tiny model of `head` saved like train saves one (`record`: its config's flowtune block; None: a
    model saved before flowtune recorded anything)."""
    import transformers

    extra = {"problem_type": "multi_label_classification"} if multi_label else {}
    model = getattr(transformers, head).from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
        **extra)
    if record is not None:
        model.config.flowtune = record
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagger(tiny_base: Path, tmp_path_factory) -> Path:
    return saved(tiny_base, tmp_path_factory.mktemp("tagger"), "AutoModelForTokenClassification", TAGS,
                 {"max_length": 16, "task_kind": "ner"})


@pytest.fixture(scope="module")
def classifier(tiny_base: Path, tmp_path_factory) -> Path:
    return saved(tiny_base, tmp_path_factory.mktemp("classifier"), "AutoModelForSequenceClassification", CLASSES,
                 {"max_length": 16, "task_kind": "textclass"})


# ------------------------------------------------------------------------ the kind of a saved model


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_kind_recorded_in_the_config_wins_over_the_architecture(tmp_path: Path):
    folder = write_config(tmp_path / "m", {"architectures": ["BertForTokenClassification"],
                                           "flowtune": {"max_length": 64, "task_kind": "textclass"}})
    assert kind_of_model(folder) == "textclass" and trained_max_length(folder) == 64


@pytest.mark.parametrize(("architecture", "kind"), [("BertForTokenClassification", "ner"),
                                                    ("RobertaForSequenceClassification", "textclass")])
def test_a_model_saved_before_the_kind_was_recorded_is_known_by_its_head(tmp_path: Path, architecture, kind):
    folder = write_config(tmp_path / "m", {"architectures": [architecture], "flowtune": {"max_length": 64}})
    assert kind_of_model(folder) == kind


def test_a_config_that_names_no_known_kind_is_an_error_naming_the_file(tmp_path: Path):
    folder = write_config(tmp_path / "m", {"architectures": ["BertModel"]})
    with pytest.raises(ValueError, match=r"m/config.json: records no flowtune.task_kind .*'BertModel'"):
        kind_of_model(folder)
    write_config(folder, {"flowtune": {"task_kind": "speech"}})
    with pytest.raises(ValueError, match=r"m/config.json: flowtune.task_kind 'speech' is not one of ner, textclass"):
        kind_of_model(folder)
    with pytest.raises(FileNotFoundError, match=r"nothing/config.json: not found"):
        kind_of_model(tmp_path / "nothing")


def test_a_variant_keeps_the_kind_and_answers_through_the_seam(tagger: Path, tmp_path: Path):
    from tasks import variants
    from tasks.kinds.saved import head_class

    folder = variants.build("int8", tagger, tmp_path / "int8", auto_class=head_class(tagger))
    assert kind_of_model(folder) == "ner" and trained_max_length(folder) == 16
    answers = predictor_for(folder, 4).predict(["Alice met Bob"], ["a"])
    assert answers[0]["tokens"] == ["Alice", "met", "Bob"] and len(answers[0]["scores"]) == 3


def test_the_task_kinds_build_the_same_predictors(tagger: Path, classifier: Path):
    from tasks.kinds.ner.kind import Ner
    from tasks.kinds.textclass.kind import TextClass

    assert Ner([]).predictor(tagger, 4).kind == "ner"
    assert TextClass([], False).predictor(classifier, 4, 8).max_length == 8


# ------------------------------------------------------------------------ NER


def test_the_tagger_answers_tags_with_their_probabilities_windowed_at_max_length(tagger: Path):
    from tasks.kinds.ner.modeling import predict_tags

    predictor = predictor_for(tagger, batch_size=2)
    assert (predictor.kind, predictor.answer_kind, predictor.max_length, predictor.labels) == ("ner", "tagger", 16,
                                                                                                TAGS)
    long = [f"w{i}" for i in range(40)]  # more pieces than one window of 16
    answers = predictor.predict(["Alice met  Bob", long, ["New York", "!"]], ["0", "1", "2"])
    assert [a["id"] for a in answers] == ["0", "1", "2"]
    assert [a["tokens"] for a in answers] == [["Alice", "met", "Bob"], long, ["New York", "!"]]
    assert [a["tags"] for a in answers] == predict_tags(predictor.model, predictor.tokenizer,
                                                        [a["tokens"] for a in answers], 2, 16)
    for answer in answers:
        assert set(answer) == {"id", "tokens", "tags", "scores"} and len(answer["scores"]) == len(answer["tokens"])
        # the argmax of 5 classes has at least probability 1/5; rounded to 6 places
        assert all(0.2 <= s <= 1 and round(s, 6) == s for s in answer["scores"])


def test_the_tagger_describes_each_item_for_monitoring(tagger: Path):
    predictor = predictor_for(tagger, 4)
    items = [TEXT, ["a", "😀"], ""]
    answers = predictor.predict(items, ["0", "1", "2"])
    rows = predictor.describe(items, answers)
    assert all(set(row) == STAT_KEYS for row in rows)
    first = rows[0]
    assert {k: first[k] for k in ("words", "urls", "emoji", "non_latin", "upper_words")} == {
        "words": 8, "urls": 1, "emoji": 1, "non_latin": 6, "upper_words": 1}
    assert (first["pieces"], first["unknown_pieces"], first["fragmented_words"]) == (25, 1, 2)  # the emoji: [UNK]
    scores = answers[0]["scores"]
    assert first["confidence"] == pytest.approx(sum(scores) / len(scores))
    assert first["min_confidence"] == min(scores)
    assert first["predicted"] == entity_types(answers[0]["tags"])
    assert rows[1]["chars"] == 3 and rows[1]["emoji"] == 1
    assert (rows[2]["words"], rows[2]["confidence"], rows[2]["predicted"]) == (0, 1.0, [])


def test_predicted_entities_are_counted_as_seqeval_counts_them():
    assert entity_types(["B-person", "I-person", "O", "I-loc", "I-loc", "B-loc", "B-loc", "I-person"]) == [
        "person", "loc", "loc", "loc", "person"]
    assert entity_types(["O", "O"]) == []


def test_describe_runs_in_another_thread_while_predict_runs(tagger: Path):
    """Capture describes answered items in a background thread while the serving thread predicts the next
    batch: describe has a tokenizer of its own, so neither fails and each gives what it gives alone."""
    predictor = predictor_for(tagger, 4)
    items = [f"{TEXT} {i} " + "word " * (i % 30) for i in range(64)]
    answers = predictor.predict(items, [str(i) for i in range(len(items))])
    expected = predictor.describe(items, answers)
    described, errors = [], []

    def describe_repeatedly() -> None:
        try:
            for _ in range(5):
                described.append(predictor.describe(items, answers))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    worker = threading.Thread(target=describe_repeatedly)
    worker.start()
    while worker.is_alive():
        assert predictor.predict(items, [str(i) for i in range(len(items))]) == answers
    worker.join()
    assert errors == [] and described == [expected] * 5


def test_the_tagger_reads_writes_and_scores_like_predict_did(tagger: Path, tmp_path: Path):
    predictor = predictor_for(tagger, 4)
    (tmp_path / "gold.conll").write_text("Alice\tB-person\nmet\tO\n\nBob\tB-person\n")
    items, ids, gold = predictor.read_input(tmp_path / "gold.conll")
    assert items == [["Alice", "met"], ["Bob"]] and gold == [["B-person", "O"], ["B-person"]] and len(ids) == 2
    (tmp_path / "plain.jsonl").write_text(json.dumps({"tokens": ["Alice"]}) + "\n")
    assert predictor.read_input(tmp_path / "plain.jsonl")[2] is None
    assert predictor.read_lines(["Alice met Bob", "", "hi"]) == ([["Alice", "met", "Bob"], ["hi"]],
                                                                 ["line:1", "line:2"])
    answers = predictor.predict(items, ids)
    conll, jsonl = io.StringIO(), io.StringIO()
    predictor.write(answers, None, conll)
    predictor.write(answers, "jsonl", jsonl)
    assert conll.getvalue() == "".join(f"{t}\t{g}\n" for t, g in zip(items[0], answers[0]["tags"], strict=True)
                                       ) + "\n" + f"Bob\t{answers[1]['tags'][0]}\n\n"
    assert [json.loads(line) for line in jsonl.getvalue().splitlines()] == answers
    assert predictor.score(gold, answers).startswith("gold tags in the input: strict F1 ")


def test_flowtune_predict_tags_through_the_seam(tagger: Path, capsys):
    from flows.cli.main import main as flowtune

    assert flowtune(["predict", "--model", str(tagger), "--format", "jsonl", "Alice met Bob"]) == 0
    (answer,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert answer["id"] == "line:1" and answer["tokens"] == ["Alice", "met", "Bob"] and len(answer["scores"]) == 3


# ------------------------------------------------------------------------ text classification


def test_the_classifier_answers_and_describes(classifier: Path):
    predictor = predictor_for(classifier, 4)
    assert (predictor.kind, predictor.answer_kind, predictor.labels) == ("textclass", "classifier", CLASSES)
    items = [TEXT, ["a", "bad", "day"]]
    answers = predictor.predict(items, ["t1", "t2"])
    assert answers[1]["text"] == "a bad day"
    for answer in answers:
        assert set(answer) == {"id", "text", "label", "probabilities"} and list(answer["probabilities"]) == CLASSES
    rows = predictor.describe(items, answers)
    assert all(set(row) == STAT_KEYS for row in rows)
    assert (rows[0]["words"], rows[0]["pieces"], rows[0]["urls"]) == (8, 25, 1)
    for row, answer in zip(rows, answers, strict=True):
        assert row["confidence"] == row["min_confidence"] == max(answer["probabilities"].values())
        assert row["predicted"] == [answer["label"]]


def test_a_multi_label_classifier_is_as_confident_as_its_yes_no_decisions(tiny_base: Path, tmp_path: Path):
    folder = saved(tiny_base, tmp_path / "m", "AutoModelForSequenceClassification", ["person", "place"],
                   {"max_length": 16, "task_kind": "textclass"}, multi_label=True)
    predictor = predictor_for(folder, 4)
    answers = predictor.predict(["john went to paris"], ["a"])
    (row,) = predictor.describe(["john went to paris"], answers)
    probabilities = answers[0]["probabilities"].values()
    assert row["confidence"] == pytest.approx(sum(max(p, 1 - p) for p in probabilities) / 2)
    assert row["predicted"] == [label for label in answers[0]["label"].split("|") if label]


def test_the_classifier_reads_gold_labels_and_refuses_unknown_ones(classifier: Path, tmp_path: Path):
    from tasks.io import InputFormatError

    predictor = predictor_for(classifier, 4)
    (tmp_path / "in.csv").write_text("text,label\ngood day,positive\nbad day,negative\n")
    items, ids, gold = predictor.read_input(tmp_path / "in.csv")
    assert items == ["good day", "bad day"] and gold == ["positive", "negative"] and ids == ["in:2", "in:3"]
    answers = predictor.predict(items, ids)
    assert predictor.score(gold, answers).startswith("gold labels in the input: macro-F1 ")
    out = io.StringIO()
    predictor.write(answers, None, out)
    label, shown, text = out.getvalue().splitlines()[0].split("\t")
    assert (label, text) == (answers[0]["label"], "good day")
    assert shown == f"{answers[0]['probabilities'][label]:.4f}"
    (tmp_path / "bad.csv").write_text("text,label\ngood day,great\n")
    with pytest.raises(InputFormatError, match=r"bad.csv: labels \['great'\] are not classes of the model"):
        predictor.read_input(tmp_path / "bad.csv")


def test_a_bad_input_file_fails_before_any_weights_load(tagger: Path, classifier: Path, tmp_path: Path):
    from tasks.io import InputFormatError

    for folder, first_line in ((tagger, '{"tokens": ["a"]}'), (classifier, '{"text": "a"}')):
        (tmp_path / "broken.jsonl").write_text(first_line + '\n{"tokens": ["b"\n')  # line 2 is cut short
        predictor = predictor_for(folder, 4)
        with pytest.raises(InputFormatError, match=r"broken.jsonl:2: not valid JSON"):
            predictor.read_input(tmp_path / "broken.jsonl")
        assert (predictor._loaded if folder == tagger else predictor._saved) is None


def test_flowtune_predict_classifies_jsonl_from_stdin(classifier: Path, capsys, monkeypatch):
    from flows.cli.main import main as flowtune

    rows = [{"text": "good day", "label": "positive"}, {"text": "bad day", "label": "negative"}]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(row) + "\n" for row in rows)))
    assert flowtune(["predict", "--model", str(classifier), "--input", "-", "--format", "jsonl"]) == 0
    out = capsys.readouterr()
    assert [json.loads(line)["text"] for line in out.out.splitlines()] == ["good day", "bad day"]
    assert "gold labels in the input: macro-F1 " in out.err and " on 2 texts" in out.err


# ------------------------------------------------------------------------ the shared text statistics


def test_text_statistics_count_what_a_text_is_made_of():
    assert text_statistics("NASA and the U.S. met I at www.x.org, ☀ 😀👍🏽 日本 Ελλάδα") == {
        "words": 12, "chars": 53, "urls": 1, "emoji": 3, "non_latin": 8, "upper_words": 2}
    assert text_statistics("") == {"words": 0, "chars": 0, "urls": 0, "emoji": 0, "non_latin": 0, "upper_words": 0}


def test_piece_statistics_count_unknown_and_fragmented_words(tiny_base: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert piece_statistics(tokenizer, ["supercalifragilisticexpialidocious word", "", "a😀b U.S."]) == [
        {"pieces": 12, "unknown_pieces": 0, "fragmented_words": 1},
        {"pieces": 0, "unknown_pieces": 0, "fragmented_words": 0},
        {"pieces": 5, "unknown_pieces": 1, "fragmented_words": 1}]  # a😀b is one [UNK]; U.S. four pieces
    assert piece_statistics(tokenizer, []) == []
