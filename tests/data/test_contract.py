"""The GX data contract passes good data and fails bad data with record-level examples."""

from pathlib import Path

import pytest

from tasks.params import ValidateParams
from tasks.records import NerRecord, write_jsonl
from tasks.validate import ContractError, run

PARAMS = ValidateParams(entity_types=["person", "geo-loc"], min_sentences=3, max_tokens_per_sentence=50)


def good(n: int = 4) -> list[NerRecord]:
    return [NerRecord(f"f.conll:{i}", ("Alice", "visits", "Paris"), ("B-person", "O", "B-geo-loc")) for i in range(n)]


def write(folder: Path, train: list[NerRecord], dev=None, test=None) -> Path:
    for split, records in (("train", train), ("dev", dev or good(1)), ("test", test or good(1))):
        write_jsonl(folder / f"{split}.jsonl", records)
    return folder


def test_good_data_passes_and_writes_report(tmp_path: Path):
    report = run(PARAMS, write(tmp_path, good()), tmp_path / "report.json")
    assert report["success"] and report["failed"] == 0
    assert (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("bad", "expected"),
    [  # each pattern: the failed expectation, then (next line) the record id it names
        (NerRecord("f.conll:9", ("a", "b"), ("O",)), r"expect_column_pair_values_to_be_equal.*\n.*f\.conll:9"),
        (NerRecord("f.conll:9", ("Bob",), ("B-villain",)),
         r"expect_column_values_to_be_in_set on tokens\.tag.*\n.*f\.conll:9 token 0.*B-villain"),
        (NerRecord("f.conll:9", ("a", "Bob"), ("O", "I-person")),
         r"iob2_problem.*\n.*f\.conll:9.*'I-person' follows 'O'"),
        (NerRecord("f.conll:9", ("a", " "), ("O", "O")), r"tokens\.token_blank.*\n.*f\.conll:9 token 1"),
        (NerRecord("f.conll:9", ("w",) * 60, ("O",) * 60),
         r"expect_column_values_to_be_between on sentences\.n_tokens.*\n.*f\.conll:9"),
        (NerRecord("f.conll:9", (), ()), r"expect_column_values_to_be_between on sentences\.n_tokens.*\n.*f\.conll:9"),
    ],
    ids=["length-mismatch", "unknown-tag", "i-without-b", "blank-token", "too-long", "empty-sentence"],
)
def test_bad_record_fails_with_its_id(tmp_path: Path, bad: NerRecord, expected: str):
    with pytest.raises(ContractError, match=expected):
        run(PARAMS, write(tmp_path, good() + [bad]), tmp_path / "report.json")


def test_too_few_sentences(tmp_path: Path):
    params = ValidateParams(entity_types=["person", "geo-loc"], min_sentences=100, max_tokens_per_sentence=50)
    with pytest.raises(ContractError, match="expect_table_row_count_to_be_between on sentences: observed 6"):
        run(params, write(tmp_path, good()), tmp_path / "report.json")


def test_examples_are_capped_at_five(tmp_path: Path):
    bad = [NerRecord(f"f.conll:{100 + i}", ("x",), ("B-nope",)) for i in range(9)]
    with pytest.raises(ContractError) as info:
        run(PARAMS, write(tmp_path, good() + bad), tmp_path / "report.json")
    assert str(info.value).count("e.g. f.conll:1") == 5
