import pytest

from tasks.iob import entity_spans, iob2_errors, label_list, split_tag, to_iob2


def test_split_tag_shapes():
    assert split_tag("B-person") == ("B", "person")
    assert split_tag("I-geo-loc") == ("I", "geo-loc")
    assert split_tag("O") == ("O", None)
    assert split_tag("X-thing") == ("X-thing", None)


def test_valid_iob2_has_no_errors():
    assert iob2_errors(["B-person", "I-person", "O", "B-geo-loc", "B-geo-loc", "I-geo-loc"]) == []


def test_i_after_o_and_after_other_type_are_errors():
    errors = iob2_errors(["O", "I-person", "B-company", "I-person"])
    assert len(errors) == 2
    assert "token 1: 'I-person' follows 'O'" in errors[0]
    assert "token 3: 'I-person' follows 'B-company'" in errors[1]


def test_i_at_sentence_start_is_error():
    assert "sentence start" in iob2_errors(["I-person"])[0]


def test_malformed_tag_is_error():
    assert "not O, B-<type> or I-<type>" in iob2_errors(["PER"])[0]


def test_entity_spans_end_exclusive():
    assert entity_spans(["B-a", "I-a", "O", "B-b", "B-a"]) == [("a", 0, 2), ("b", 3, 4), ("a", 4, 5)]


def test_label_list_order():
    assert label_list(["person", "geo-loc"]) == ["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]


@pytest.mark.parametrize(("scheme", "source", "expected"), [
    # IOB1: I- opens an entity; B- only splits two adjacent entities of one type
    ("iob1", ["I-a", "I-a", "B-a", "I-a", "O", "I-b", "I-a"], ["B-a", "I-a", "B-a", "I-a", "O", "B-b", "B-a"]),
    # BIOES and BILOU: single-token and last-token prefixes fold into B- and I-
    ("bioes", ["S-a", "B-b", "I-b", "E-b", "O", "U-a", "B-a", "L-a"],
     ["B-a", "B-b", "I-b", "I-b", "O", "B-a", "B-a", "I-a"]),
    ("iob2", ["B-a", "I-a", "O"], ["B-a", "I-a", "O"]),
    # an unknown shape is kept, for the contract to report with its record
    ("bioes", ["X-a", "O"], ["X-a", "O"]),
])
def test_to_iob2(scheme, source, expected):
    assert to_iob2(source, scheme) == expected
    if "X-a" not in source:
        assert iob2_errors(expected) == []


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou2'"):
        to_iob2(["O"], "bilou2")


def test_bioes_tags_read_as_iob2_get_a_hint():
    assert "set ingest.tag_scheme: bioes" in iob2_errors(["S-per"])[0]
