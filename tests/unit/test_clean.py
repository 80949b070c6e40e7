import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks import clean
from tasks.io import InputFormatError, write_jsonl
from tasks.iob import iob2_errors
from tasks.kinds.ner.clean import clean_record, clean_split, repair_bio
from tasks.kinds.ner.kind import Ner
from tasks.kinds.ner.params import NerCleanParams
from tasks.kinds.ner.records import NerRecord
from tasks.text import normalize_token

PARAMS = NerCleanParams(unicode_form="NFC", drop_exact_duplicates=True, drop_near_duplicates=False, bio_repair="repair",
                        min_tokens=1, max_tokens=None, decontaminate_train=False)


def test_normalize_nfc_invisible_and_whitespace():
    assert normalize_token("Cafe\u0301", "NFC") == "Caf\u00e9"
    assert normalize_token("zero\u200bwidth", "NFC") == "zerowidth"
    assert normalize_token("  two \t words ", "NFC") == "two words"


def test_empty_token_dropped_with_its_tag_and_entity_kept_valid():
    counts = Counter()
    record = NerRecord("r", ("\u200b", "York", "is", " "), ("B-loc", "I-loc", "O", "O"))
    cleaned = clean_record(record, PARAMS, counts)
    assert cleaned.tokens == ("York", "is")
    assert cleaned.tags == ("B-loc", "O")
    assert iob2_errors(cleaned.tags) == []
    assert counts["empty_tokens_dropped"] == 2


def test_sentence_of_only_blanks_is_dropped_and_counted():
    counts = Counter()
    assert clean_record(NerRecord("r", (" ", "\t"), ("O", "O")), PARAMS, counts) is None
    assert counts["empty_sentences_dropped"] == 1


def test_exact_duplicates_dropped_after_normalization():
    counts = Counter()
    a = NerRecord("a", ("Caf\u00e9",), ("O",))
    b = NerRecord("b", ("Cafe\u0301",), ("O",))
    c = NerRecord("c", ("Caf\u00e9",), ("B-org",))  # same text, other tags: not an exact duplicate
    kept = clean_split([a, b, c], PARAMS, counts)
    assert [r.id for r in kept] == ["a", "c"]
    assert counts["duplicates_dropped"] == 1


def test_duplicates_kept_when_disabled():
    params = PARAMS.model_copy(update={"drop_exact_duplicates": False})
    a = NerRecord("a", ("x",), ("O",))
    assert len(clean_split([a, a], params, Counter())) == 2


def test_near_duplicates_ignore_case_and_punctuation_tokens():
    counts = Counter()
    params = PARAMS.model_copy(update={"drop_near_duplicates": True})
    a = NerRecord("a", ("Hi", "Bob", "!"), ("O", "B-person", "O"))
    b = NerRecord("b", ("hi", "bob"), ("O", "O"))  # a near copy, even with other tags: the first stays
    c = NerRecord("c", ("Hi", "Bobby"), ("O", "B-person"))
    assert [r.id for r in clean_split([a, b, c], params, counts)] == ["a", "c"]
    assert counts["near_duplicates_dropped"] == 1


def test_bio_repair_policies():
    broken = NerRecord("r", ("in", "New", "York", "and", "Rome"), ("O", "I-loc", "I-loc", "O", "I-loc"))
    counts = Counter()
    [repaired] = clean_split([broken], PARAMS, counts)
    assert repaired.tags == ("O", "B-loc", "I-loc", "O", "B-loc") and counts["bio_repaired"] == 1
    counts = Counter()
    assert clean_split([broken], PARAMS.model_copy(update={"bio_repair": "drop"}), counts) == []
    assert counts["invalid_bio_dropped"] == 1


def test_length_limits_drop_and_count():
    params = PARAMS.model_copy(update={"min_tokens": 2, "max_tokens": 3})
    records = [NerRecord(str(n), tuple(f"w{i}" for i in range(n)), ("O",) * n) for n in (1, 2, 3, 4)]
    counts = Counter()
    assert [r.id for r in clean_split(records, params, counts)] == ["2", "3"]
    assert counts["too_short_dropped"] == 1 and counts["too_long_dropped"] == 1


@given(st.lists(st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b"]), max_size=12))
def test_bio_repair_always_gives_valid_iob2_with_the_same_types(tags):
    repaired = repair_bio(tuple(tags))
    assert iob2_errors(repaired) == []
    assert [t[2:] for t in repaired] == [t[2:] for t in tags]  # only B-/I- prefixes change


# ------------------------------------------------------------------ official dev/test splits, decontamination


def test_an_official_split_is_normalized_but_keeps_every_sentence_and_counts_what_it_kept():
    params = PARAMS.model_copy(update={"drop_near_duplicates": True, "bio_repair": "drop", "max_tokens": 2})
    records = [NerRecord("a", ("Cafe\u0301", "x"), ("O", "I-org")), NerRecord("b", ("Caf\u00e9", "X"), ("O", "B-org")),
               NerRecord("c", ("Caf\u00e9", "X"), ("O", "B-org")), NerRecord("d", ("a", "b", "c"), ("O",) * 3)]
    counts = Counter()
    kept = clean_split(records, params, counts, keep_every_row=True)
    assert [r.id for r in kept] == ["a", "b", "c", "d"]
    assert kept[0].tokens == ("Caf\u00e9", "x") and kept[0].tags == ("O", "B-org")  # normalized, repaired
    assert counts == Counter(tokens_normalized=1, bio_repaired=1, near_duplicates_kept=1, duplicates_kept=1,
                             too_long_kept=1)
    assert [r.id for r in clean_split(records, params, Counter())] == ["b"]  # the same rules drop in train


def test_an_official_sentence_left_without_tokens_is_an_error_naming_it():
    with pytest.raises(InputFormatError, match=r"record test\.conll:7: no visible token left .* never dropped"):
        clean_split([NerRecord("test.conll:7", ("\u200b",), ("O",))], PARAMS, Counter(), keep_every_row=True)


def raw_folder(folder: Path, train, dev, test, split_by: str | None) -> Path:
    for split, records in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(folder / f"{split}.jsonl", records)
    if split_by:
        (folder / "ingest_report.json").write_text(json.dumps({"split_by": split_by}))
    return folder


def sentence(record_id: str, *words: str) -> NerRecord:
    return NerRecord(record_id, words, ("O",) * len(words))


@pytest.mark.parametrize("split_by", ["source", "hash", None])
def test_only_a_source_folders_dev_and_test_keep_their_duplicates(tmp_path: Path, split_by):
    twice = [sentence("t1", "same", "words"), sentence("t2", "same", "words")]
    raw = raw_folder(tmp_path / "raw", twice, twice, twice, split_by)
    report = clean.run(PARAMS, raw, tmp_path / "clean", tmp_path / "clean.json", Ner([]))
    official = split_by == "source"
    assert report["split_by"] == ("source" if official else "hash")
    assert {split: counts["output"] for split, counts in report["splits"].items()} == {
        "train": 1, "dev": 2 if official else 1, "test": 2 if official else 1}
    assert report["splits"]["test"].get("duplicates_kept", 0) == (1 if official else 0)


def test_decontamination_drops_train_repeats_of_dev_and_test_on_the_near_duplicate_key(tmp_path: Path):
    train = [sentence("t1", "Reuters", "LONDON", "1996-08-30"), sentence("t2", "a", "fresh", "one"),
             sentence("t3", "-"), sentence("t4", "--")]
    test = [sentence("x1", "REUTERS", "London", "1996-08-30", "."), sentence("x2", "-")]
    raw = raw_folder(tmp_path / "raw", train, [sentence("d1", "dev")], test, "source")
    report = clean.run(PARAMS.model_copy(update={"decontaminate_train": True}), raw, tmp_path / "clean",
                       tmp_path / "clean.json", Ner([]))
    kept = [r.id for r in Ner([]).read(tmp_path / "clean" / "train.jsonl")]
    assert kept == ["t2", "t4"]  # a word-less sentence only matches an identical one
    assert report["splits"]["train"][clean.DECONTAMINATED] == 2
    assert report["splits"]["test"]["output"] == 2
    assert json.loads((tmp_path / "clean.json").read_text()) == report
