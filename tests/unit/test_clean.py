from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tasks.iob import iob2_errors
from tasks.kinds.ner.clean import clean_record, clean_split, repair_bio
from tasks.kinds.ner.params import NerCleanParams
from tasks.kinds.ner.records import NerRecord
from tasks.text import normalize_token

PARAMS = NerCleanParams(unicode_form="NFC", drop_exact_duplicates=True, drop_near_duplicates=False, bio_repair="repair",
                     min_tokens=1, max_tokens=None)


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
