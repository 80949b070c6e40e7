"""The label audit (tasks/audit.py, tasks/kinds/*/audit.py): cross-fitted probabilities for every train row,
ranked by cleanlab. The ranking is checked on hand-made probabilities; the slow tests train a tiny model on
synthetic data with planted label errors and check that the planted rows come first (precision at k)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tasks import audit
from tasks.kinds.ner.records import NerRecord
from tasks.kinds.ner.training import NerTraining
from tasks.kinds.textclass.records import TextExample
from tasks.kinds.textclass.training import TextClassTraining
from tests.helpers import NAMES, PLACES, synthetic, train_params

NER = NerTraining(["geo-loc", "person"])  # labels: O, B-geo-loc, I-geo-loc, B-person, I-person


def confident(label_ids: list[int], classes: int, p: float = 0.9) -> np.ndarray:
    """Rows of a model sure of `label_ids` (p on each, the rest spread evenly)."""
    rows = np.full((len(label_ids), classes), (1 - p) / (classes - 1))
    rows[np.arange(len(label_ids)), label_ids] = p
    return rows


def with_tag(record: NerRecord, position: int, tag: str) -> NerRecord:
    tags = list(record.tags)
    tags[position] = tag
    return NerRecord(record.id, record.tokens, tuple(tags))


def planted_ner(count: int, every: int) -> tuple[list[NerRecord], set[str]]:
    """Synthetic sentences (`<name> went to <place> ...`); every `every`-th one's name is tagged as a place."""
    records, planted = synthetic(count, seed=3), set()
    for i in range(0, count, every):
        records[i] = with_tag(records[i], 0, "B-geo-loc")
        planted.add(records[i].id)
    return records, planted


def test_folds_are_balanced_seeded_and_cover_every_row():
    fold = audit.fold_of_rows(10, 3, seed=1)
    assert sorted(fold.count(k) for k in range(3)) == [3, 3, 4]
    assert fold == audit.fold_of_rows(10, 3, seed=1)
    assert fold != audit.fold_of_rows(10, 3, seed=2)


def test_fewer_rows_than_folds_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="label.audit_folds=3"):
        audit.fold_of_rows(2, 3, seed=1)


def test_ner_ranks_a_sentence_the_models_confidently_contradict_first():
    records, planted = planted_ner(20, every=7)
    labels = NER.labels
    # Out-of-sample models that learned the pattern: the name is a person, the place a place.
    truth = [labels.index(t) for t in synthetic(1, seed=0)[0].tags]
    findings = NER.label_issues(records, [confident(truth, len(labels)) for _ in records])
    assert {f["id"] for f in findings[:len(planted)]} == planted
    top = findings[0]
    assert top["given"][0] == "B-geo-loc" and top["suggested"][0] == "B-person" and top["flagged"]
    assert top["tokens"] == list(records[0].tokens) and 0 <= top["score"] < findings[-1]["score"]
    assert not findings[-1]["flagged"]


def test_ner_suggestions_are_valid_iob2():
    record = NerRecord("r1", ("new", "york"), ("O", "O"))
    labels = NER.labels
    # The models' argmax would be I-geo-loc I-geo-loc: an entity cannot start with I-.
    finding = NER.label_issues([record], [confident([labels.index("I-geo-loc")] * 2, len(labels))])[0]
    assert finding["suggested"] == ["B-geo-loc", "I-geo-loc"]


def test_an_empty_sentence_is_ranked_last_not_an_error():
    records = [NerRecord("empty", (), ()), *synthetic(3, seed=1)]
    truth = [NER.labels.index(t) for t in records[1].tags]
    distributions = [np.zeros((0, 5)), *[confident(truth, 5) for _ in records[1:]]]
    findings = NER.label_issues(records, distributions)
    assert findings[-1]["id"] == "empty" and findings[-1]["score"] == 1.0 and findings[-1]["suggested"] == []


def planted_texts(count: int, every: int) -> tuple[list[TextExample], set[str]]:
    """'<name> ...' is about a person, '<place> ...' is not; every `every`-th text carries the other label."""
    rows, planted = [], set()
    for i in range(count):
        person = i % 2 == 0
        label = "person" if person else "none"
        if i % every == 0:
            label = "none" if person else "person"
            planted.add(f"t{i}")
        head = (NAMES if person else PLACES)[i % 8]
        rows.append(TextExample(f"t{i}", f"{head} was there today and {['yes', 'no', 'ok'][i % 3]}", label))
    return rows, planted


def test_textclass_ranks_confidently_contradicted_texts_first():
    rows, planted = planted_texts(30, every=10)
    kind = TextClassTraining(["none", "person"])
    truth = [1 if i % 2 == 0 else 0 for i in range(len(rows))]
    findings = kind.label_issues(rows, list(confident(truth, 2)))
    assert {f["id"] for f in findings[:len(planted)]} == planted
    assert all(f["flagged"] for f in findings[:len(planted)]) and not findings[len(planted)]["flagged"]
    assert findings[0]["suggested"] != findings[0]["given"] and "text" in findings[0]


def test_multi_label_is_refused_before_any_training(tiny_base: Path):
    rows = [TextExample(f"x{i}", "t", "a") for i in range(6)]
    with pytest.raises(ValueError, match="multi-label"):
        audit.audit(TextClassTraining(["a", "b"], multi_label=True), rows, train_params(tiny_base), folds=3)


def test_the_command_line_maps_its_options_onto_the_flow():
    from flows.cli.audit import cmd_audit
    from flows.cli.main import build_parser
    from flows.orchestration.audit import audit_command

    args = build_parser().parse_args(["label", "audit", "--k", "4", "--top", "7"])
    assert args.func is cmd_audit and (args.k, args.top, args.epochs) == (4, 7, None)
    command = audit_command(args.params_file, args.k, args.top, args.epochs)
    assert command[1:] == ["-m", "tasks.audit", "--params", "params.yaml", "--k", "4", "--top", "7"]


def test_report_json_and_csv_hold_the_top_rows_as_review_items(tmp_path: Path):
    records, _ = planted_ner(10, every=5)
    truth = [NER.labels.index(t) for t in synthetic(1, seed=0)[0].tags]
    findings = NER.label_issues(records, [confident(truth, 5) for _ in records])
    path = tmp_path / "reports/label_audit.json"
    audit.write_report(path, findings, folds=3, epochs=1, top=2)
    report = json.loads(path.read_text())
    assert report["summary"] == {"rows": 10, "flagged": 2, "folds": 3, "epochs": 1, "top": 2}
    assert [set(item) for item in report["top"]] == [{"id", "tokens", "given", "suggested", "score"}] * 2
    assert len(report["rows"]) == 10
    table = list(csv.DictReader(path.with_suffix(".csv").open()))
    assert [row["id"] for row in table] == [item["id"] for item in report["top"]]
    assert table[0]["given"].split()[0] == "B-geo-loc" and table[0]["input"] == " ".join(report["top"][0]["tokens"])


def precision_at(findings: list[dict], planted: set[str]) -> float:
    top = [f["id"] for f in findings[:len(planted)]]
    return sum(i in planted for i in top) / len(planted)


@pytest.mark.slow
def test_ner_audit_finds_planted_tag_errors_from_cross_fitted_models(tiny_base: Path):
    records, planted = planted_ner(90, every=10)  # 9 planted errors
    params = train_params(tiny_base, epochs=3, learning_rate=5e-3, batch_size=8)
    findings = audit.audit(NER, records, params, folds=3)
    assert len(findings) == len(records)
    assert precision_at(findings, planted) >= 0.8, [(f["id"], f["score"]) for f in findings[:12]]


@pytest.mark.slow
def test_textclass_audit_finds_planted_label_errors_from_cross_fitted_models(tiny_base: Path):
    rows, planted = planted_texts(90, every=10)  # 9 planted errors
    params = train_params(tiny_base, epochs=8, learning_rate=1e-2, batch_size=8, max_length=12)
    findings = audit.audit(TextClassTraining(["none", "person"]), rows, params, folds=3)
    assert precision_at(findings, planted) >= 0.8, [(f["id"], f["score"]) for f in findings[:12]]


def test_word_distributions_cover_every_word_of_windowed_sentences_and_agree_with_predictions(tiny_base: Path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.kinds.ner.modeling import build_examples, encode_words, predict_label_ids, word_distributions

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForTokenClassification.from_pretrained(tiny_base, num_labels=5)
    sentences = [list(r.tokens) * 3 for r in synthetic(3, seed=5)]  # 18 words: several windows of 8 pieces
    examples = build_examples(tokenizer, encode_words(tokenizer, sentences), max_length=8)
    assert len(examples) > 2 * len(sentences)
    counts = [len(s) for s in sentences]
    rows = word_distributions(model, examples, counts, batch_size=4, pad_id=tokenizer.pad_token_id)
    assert [r.shape for r in rows] == [(count, 5) for count in counts]
    assert np.allclose([r.sum(axis=1) for r in rows], 1.0, atol=1e-5)
    predicted = predict_label_ids(model, examples, counts, batch_size=4, pad_id=tokenizer.pad_token_id)
    assert [list(r.argmax(axis=1)) for r in rows] == predicted
