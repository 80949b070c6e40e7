"""Confusion table, slices and behavioural checks on handwritten tags (a fake tagger stands in for a model)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.kinds.ner.evaluate import (
    MISSED,
    SPURIOUS,
    confusion,
    length_bucket,
    minimum_functionality,
    name_invariance,
    slices,
    swapped_names,
)
from tasks.kinds.ner.records import NerRecord


def record(rid: str, text: str, tags: str, **meta) -> NerRecord:
    return NerRecord(rid, tuple(text.split()), tuple(tags.split()), meta)


def test_confusion_counts_hits_type_errors_misses_and_spurious_entities() -> None:
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["B-company", "O", "O"]]
    predicted = [["B-person", "I-person", "O", "B-company"], ["O", "O", "B-person"]]
    assert confusion(gold, predicted) == {
        "company": {MISSED: 1},
        "geo-loc": {"company": 1},
        "person": {"person": 1},
        SPURIOUS: {"person": 1},
    }


def test_a_partial_overlap_is_one_miss_and_one_spurious_entity() -> None:
    expected = {"person": {MISSED: 1}, SPURIOUS: {"person": 1}}
    assert confusion([["B-person", "I-person"]], [["B-person", "O"]]) == expected


def test_an_inside_tag_without_begin_is_no_predicted_entity() -> None:
    assert confusion([["B-person"]], [["I-person"]]) == {"person": {MISSED: 1}}


def test_length_buckets_cover_every_length() -> None:
    assert [length_bucket(n) for n in (1, 10, 11, 20, 21, 40, 41, 500)] == \
        ["1-10", "1-10", "11-20", "11-20", "21-40", "21-40", "41+", "41+"]


def test_slices_by_length_and_source() -> None:
    records = [record("a", "john ok", "B-person O", source="tweets"),
               record("b", " ".join(["w"] * 12), " ".join(["O"] * 11 + ["B-person"]), source="news")]
    predicted = [["B-person", "O"], ["O"] * 12]
    result = slices(records, predicted)
    assert result["length"] == {"1-10": {"f1": 1.0, "sentences": 1}, "11-20": {"f1": 0.0, "sentences": 1}}
    assert result["source"] == {"news": {"f1": 0.0, "sentences": 1}, "tweets": {"f1": 1.0, "sentences": 1}}
    assert "source" not in slices([record("c", "x", "O")], [["O"]])


TEST = [
    record("t0", "john smith went home", "B-person I-person O O"),
    record("t1", "mary jones likes paris", "B-person I-person O B-geo-loc"),
    record("t2", "ask bob", "O B-person"),
    record("t3", "nothing here", "O O"),
    record("t4", "alice said hi", "B-person O O"),
]


def test_name_swaps_use_another_test_name_of_the_same_length() -> None:
    cases = swapped_names(TEST, "person", max_cases=10, seed=13)
    assert [index for index, _ in cases] == [0, 1, 2, 4]
    by_index = dict(cases)
    assert by_index[0][:2] == ["mary", "jones"] and by_index[0][2:] == ["went", "home"]
    assert by_index[2][1] in {"alice"} and by_index[4][0] == "bob"
    assert swapped_names(TEST, "person", max_cases=2, seed=13) == cases[:2]
    assert swapped_names(TEST, "person", max_cases=10, seed=13) == cases  # deterministic


def known_names_tagger(sentences):
    """A fake model that tags only the names it has seen; "bob" is not one of them."""
    first, inside = {"mary", "alice", "john"}, {"jones", "smith"}
    return [["B-person" if w in first else "I-person" if w in inside else "B-geo-loc" if w == "paris" else "O"
             for w in words] for words in sentences]


def test_name_invariance_is_the_share_of_swaps_with_unchanged_tags() -> None:
    predicted = known_names_tagger([r.tokens for r in TEST])
    result = name_invariance(TEST, predicted, known_names_tagger, "person", 10, 13)
    # t2 (bob -> alice) gains a tag and t4 (alice -> bob) loses one; the two-word swaps keep theirs.
    assert result == {"cases": 4, "passed": 2, "pass_rate": 0.5}


def test_minimum_functionality_skips_unknown_labels(tmp_path: Path) -> None:
    path = tmp_path / "mft.jsonl"
    rows = [{"id": "p", "tokens": ["hi", "john"], "tags": ["O", "B-person"]},
            {"id": "c", "tokens": ["at", "acme"], "tags": ["O", "B-company"]},
            {"id": "n", "tokens": ["so", "tired"], "tags": ["O", "O"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    def all_outside(sentences):
        return [["O"] * len(words) for words in sentences]

    result = minimum_functionality(path, {"O", "B-person", "I-person"}, all_outside)
    assert result == {"cases": 2, "passed": 1, "pass_rate": 0.5, "skipped": 1, "failed_ids": ["p"]}
