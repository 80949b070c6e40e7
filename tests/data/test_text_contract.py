"""Sequence classification data: the text contract passes good data and fails each kind of bad data
with the record or class that broke it; the real VADER tweets import, clean and pass it; augmentation
keeps labels and leaves dev and test byte-identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import augment, clean, ingest
from tasks.basemodel import contract_piece_counter
from tasks.kinds.textclass.kind import TextClass
from tasks.kinds.textclass.records import TextExample, load_examples, write_examples
from tasks.params import load_params
from tasks.validate import ContractError, run
from tests.helpers import ROOT, kind

PARAMS = load_params(ROOT / "params-sentiment.yaml")
CONTRACT = PARAMS.validate_.model_copy(update={"min_sentences": 3, "class_share": (0.2, 0.8)})
TASK = "sequence-classification"
KIND = kind(TASK)
WORDS = {"positive": "lovely", "negative": "awful", "neutral": "ordinary"}


def texts(prefix: str, n: int = 3) -> list[TextExample]:
    """n distinct texts of each class, ids `<prefix>:<i>`."""
    rows = []
    for label, word in WORDS.items():
        rows += [TextExample(f"{prefix}:{label}{i}", f"a {word} day number {prefix}{i}", label) for i in range(n)]
    return rows


def write(folder: Path, train=None, dev=None, test=None) -> Path:
    for split, rows in (("train", train), ("dev", dev), ("test", test)):
        write_examples(folder / f"{split}.jsonl", rows if rows is not None else texts(split))
    return folder


def check(folder: Path, params=CONTRACT, the_kind=KIND) -> dict:
    return run(params, folder, folder / "report.json", checkpoint="clean", kind=the_kind)  # every check is hard


def test_good_texts_pass_and_the_report_profiles_them(tmp_path: Path):
    report = check(write(tmp_path))
    assert report["success"] and report["failed"] == 0
    assert report["classes"]["train"] == {"negative": 3, "neutral": 3, "positive": 3}
    assert report["sentences"] == {"train": 9, "dev": 9, "test": 9}


@pytest.mark.parametrize(("bad", "message"), [
    (TextExample("train:odd", "a lovely day with a stranger", "sarcastic"),
     r"label_in_set .* on labels\.label.*\n.*train:odd: label='sarcastic'"),
    (TextExample("train:long", " ".join(["word"] * 600), "neutral"),
     r"sentence_length .* on texts\.n_words.*\n.*train:long: n_words=600"),
    (TextExample("train:ctrl", "a lovely\u200b day", "positive"), r"no_control_characters .*\n.*train:ctrl"),
])
def test_a_bad_train_text_is_named(tmp_path: Path, bad: TextExample, message: str):
    with pytest.raises(ContractError, match=message):
        check(write(tmp_path, train=texts("train") + [bad]))


def test_a_dev_text_that_is_also_in_train_is_leakage(tmp_path: Path):
    train = texts("train")
    leaked = TextExample("dev:copy", train[0].text, train[0].label)
    with pytest.raises(ContractError, match=r"no_leakage .*\n.*dev:copy: also_in_train='train:positive0'"):
        check(write(tmp_path, train=train, dev=texts("dev") + [leaked]))


def test_a_class_outside_its_share_bounds_fails_naming_split_and_class(tmp_path: Path):
    lopsided = texts("train", 1) + [TextExample(f"train:extra{i}", f"lovely extra {i}", "positive") for i in range(9)]
    with pytest.raises(ContractError, match=r"class_balance .*\n.*train class 'negative': .*share=0\.0833"):
        check(write(tmp_path, train=lopsided))


def test_the_declared_classes_are_the_label_set(tmp_path: Path):
    params = CONTRACT.model_copy(update={"class_share": (0.0, 1.0)})
    with pytest.raises(ContractError, match=r"label_in_set.*\n.*label='neutral'"):
        check(write(tmp_path), params, TextClass(["negative", "positive"], multi_label=False))  # task.labels


def test_the_vader_tweets_import_clean_and_pass_their_contract(tmp_path: Path):
    """The default data of the classification example, through ingest, validate and clean as in the DAG."""
    report = ingest.run(PARAMS.ingest, tmp_path / "raw", KIND)
    assert report["sentences"] == 4200 and sum(report["splits"].values()) == 4200
    raw = run(PARAMS.validate_, tmp_path / "raw", tmp_path / "raw.json", contract_piece_counter(PARAMS), kind=KIND)
    assert raw["success"], [e for e in raw["expectations"] if not e["success"]]
    cleaned = clean.run(PARAMS.clean, tmp_path / "raw", tmp_path / "clean", tmp_path / "clean.json", KIND)
    assert 0 < cleaned["splits"]["train"]["near_duplicates_dropped"] < 200
    assert run(PARAMS.validate_, tmp_path / "clean", tmp_path / "clean_report.json", kind=KIND)["success"]


def test_augmented_texts_keep_their_label_and_never_touch_evaluation_data(tmp_path: Path):
    source = write(tmp_path / "clean", train=texts("train") + [TextExample("t:big", "a big day for Alice", "positive")],
                   dev=texts("dev") + [TextExample("d:large", "a large day for Alice", "positive")])
    params = PARAMS.augment.model_copy(update={"methods": ["synonym"]})
    report = augment.run(params, source, tmp_path / "augmented", tmp_path / "augment.json", kind=KIND)
    for split in ("dev", "test"):
        assert (tmp_path / "augmented" / f"{split}.jsonl").read_bytes() == (source / f"{split}.jsonl").read_bytes()
    originals = {e.id: e for e in load_examples(source / "train.jsonl")}
    new = [e for e in load_examples(tmp_path / "augmented" / "train.jsonl") if e.id not in originals]
    assert new and len(new) == report["added"]
    for example in new:
        origin = originals[example.id.split("~")[0]]
        assert example.label == origin.label and example.text != origin.text
    evaluation = {e.text for split in ("dev", "test") for e in load_examples(source / f"{split}.jsonl")}
    assert not evaluation & {e.text for e in new}


def test_multi_label_texts_are_checked_label_by_label(tmp_path: Path):
    both = [TextExample(f"train:m{i}", f"lovely and awful day {i}", "negative|positive") for i in range(3)]
    none = [TextExample("train:none", "a day of nothing much", "")]
    report = check(write(tmp_path, train=texts("train") + both + none), CONTRACT.model_copy(
        update={"class_share": (0.2, 0.5)}))
    assert report["classes"]["train"] == {"negative": 6, "neutral": 3, "positive": 6}  # shares of 13 texts
    odd = TextExample("train:odd", "lovely yet odd", "positive|sarcastic")
    with pytest.raises(ContractError, match=r"label_in_set .*\n.*train:odd: label='sarcastic'"):
        check(write(tmp_path, train=texts("train") + both + [odd]))
