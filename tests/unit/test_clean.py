from collections import Counter

from tasks.clean import clean_record, clean_split, normalize_token
from tasks.iob import iob2_errors
from tasks.params import CleanParams
from tasks.records import NerRecord

PARAMS = CleanParams(unicode_form="NFC", drop_exact_duplicates=True)


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
    params = CleanParams(unicode_form="NFC", drop_exact_duplicates=False)
    a = NerRecord("a", ("x",), ("O",))
    assert len(clean_split([a, a], params, Counter())) == 2
