"""The GX data contract passes good data and fails bad data with record-level examples."""

import json
from pathlib import Path

import pytest

from tasks import validate
from tasks.io import write_jsonl
from tasks.kinds.ner.kind import Ner
from tasks.kinds.ner.params import NerValidateParams
from tasks.kinds.ner.records import NerRecord
from tasks.validate import ContractError

PARAMS = NerValidateParams(min_sentences=3, max_tokens_per_sentence=50, max_subword_pieces=None,
                           max_duplicate_share=0.10, reference_profile=None, entity_share_ratio=(0.33, 3.0), soft={})


def run(*args, **kwargs) -> dict:
    """The NER contract with the entity types person and geo-loc (task.labels)."""
    return validate.run(*args, kind=Ner(["person", "geo-loc"]), **kwargs)


def good(n: int = 4, prefix: str = "f") -> list[NerRecord]:
    """n distinct, valid sentences (ids f.conll:<i>), one person and one place each."""
    return [NerRecord(f"{prefix}.conll:{i}", ("Alice", "visits", f"{prefix}-Paris{i}"), ("B-person", "O", "B-geo-loc"))
            for i in range(n)]


def write(folder: Path, train: list[NerRecord], dev=None, test=None) -> Path:
    for split, records in (("train", train), ("dev", dev or good(1, "dev")), ("test", test or good(1, "test"))):
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
    params = PARAMS.model_copy(update={"min_sentences": 100})
    expected = r"row_count \(expect_table_row_count_to_be_between on sentences\): observed 6, expected min_value=100"
    with pytest.raises(ContractError, match=expected):
        run(params, write(tmp_path, good()), tmp_path / "report.json")


def test_examples_are_capped_at_five(tmp_path: Path):
    bad = [NerRecord(f"f.conll:{100 + i}", (f"x{i}",), ("B-nope",)) for i in range(9)]
    with pytest.raises(ContractError) as info:
        run(PARAMS, write(tmp_path, good() + bad), tmp_path / "report.json")
    assert str(info.value).count("e.g. f.conll:1") == 5


def test_dev_sentence_copied_into_train_is_named_as_leakage(tmp_path: Path):
    dev = [NerRecord("dev.conll:3", ("Bob", "in", "Rome"), ("B-person", "O", "B-geo-loc"))]
    train = good() + [NerRecord("train.conll:77", ("Bob", "in", "Rome"), ("B-person", "O", "B-geo-loc"))]
    with pytest.raises(ContractError, match=r"also_in_train.*\n.*dev\.conll:3: .*train\.conll:77"):
        run(PARAMS, write(tmp_path, train, dev=dev), tmp_path / "report.json")


def test_too_many_duplicate_sentences_fail(tmp_path: Path):
    train = good(4) + [good(1)[0]] * 4
    with pytest.raises(ContractError, match=r"expect_column_mean_to_be_between on sentences\.is_duplicate"):
        run(PARAMS, write(tmp_path, train), tmp_path / "report.json")


def test_control_character_in_a_token_is_named(tmp_path: Path):
    bad = NerRecord("f.conll:9", ("Ali\u200bce", "visits"), ("B-person", "O"))
    with pytest.raises(ContractError, match=r"tokens\.token_control.*\n.*f\.conll:9 token 0"):
        run(PARAMS, write(tmp_path, good() + [bad]), tmp_path / "report.json")


def profiled(tmp_path: Path, shares: dict[str, float]) -> NerValidateParams:
    reference = tmp_path / "profile.json"
    reference.write_text(json.dumps({"entity_share": shares}))
    return PARAMS.model_copy(update={"reference_profile": str(reference)})


def test_data_matching_the_reference_profile_passes(tmp_path: Path):
    params = profiled(tmp_path, {"person": 0.5, "geo-loc": 0.5})
    assert run(params, write(tmp_path, good()), tmp_path / "report.json")["success"]


def test_all_o_import_fails_the_distribution_check(tmp_path: Path):
    params = profiled(tmp_path, {"person": 0.5, "geo-loc": 0.5})
    all_o = [NerRecord(f"f.conll:{i}", ("alice", "visits", f"paris{i}"), ("O", "O", "O")) for i in range(4)]
    dev = [NerRecord("dev.conll:1", ("nobody",), ("O",))]
    test = [NerRecord("test.conll:1", ("nothing",), ("O",))]
    with pytest.raises(ContractError, match=r"entity_profile\.ratio.*\n.*entity type 'person'"):
        run(params, write(tmp_path, all_o, dev=dev, test=test), tmp_path / "report.json")


def test_a_vanished_entity_type_is_named(tmp_path: Path):
    params = profiled(tmp_path, {"person": 0.45, "geo-loc": 0.45, "company": 0.10})
    with pytest.raises(ContractError, match=r"entity type 'company'.*ratio=0\.0"):
        run(params, write(tmp_path, good()), tmp_path / "report.json")


def test_unreadable_reference_profile_is_named(tmp_path: Path):
    params = PARAMS.model_copy(update={"reference_profile": str(tmp_path / "missing.json")})
    with pytest.raises(ContractError, match=r"missing\.json: cannot read the reference entity profile"):
        run(params, write(tmp_path, good()), tmp_path / "report.json")


def test_a_soft_check_warns_without_stopping(tmp_path: Path):
    train = good(4) + [good(1)[0]] * 4
    params = PARAMS.model_copy(update={"soft": {"raw": ["duplicate_share"]}})
    report = run(params, write(tmp_path, train), tmp_path / "report.json")
    assert report["success"] and report["failed"] == 0 and report["warnings"] == 1
    soft = [e for e in report["expectations"] if e["check"] == "duplicate_share"]
    assert soft[0]["severity"] == "soft" and not soft[0]["success"]


def test_unknown_soft_check_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="soft.raw: unknown check.*'duplicates_share'; this kind's checks: row"):
        NerValidateParams.model_validate({**PARAMS.model_dump(), "soft": {"raw": ["duplicates_share"]}})
    with pytest.raises(ValidationError, match="'label_in_set'"):  # a text-classification check
        NerValidateParams.model_validate({**PARAMS.model_dump(), "soft": {"raw": ["label_in_set"]}})


def test_a_check_soft_on_raw_data_is_hard_after_cleaning(tmp_path: Path):
    train = good(4) + [good(1)[0]] * 4
    params = PARAMS.model_copy(update={"soft": {"raw": ["duplicate_share"]}})
    with pytest.raises(ContractError, match="duplicate_share"):
        run(params, write(tmp_path, train), tmp_path / "report.json", checkpoint="clean")


def test_a_train_split_without_any_entity_fails_even_without_a_reference_profile(tmp_path: Path):
    """A broken import that tags everything O: nothing to learn. No reference profile needed to see it."""
    all_o = [NerRecord(f"f.conll:{i}", ("Alice", "visits", f"Paris{i}"), ("O", "O", "O")) for i in range(4)]
    assert PARAMS.reference_profile is None
    with pytest.raises(ContractError, match=r"train_has_entities .*\n.*train split: mentions=0"):
        run(PARAMS, write(tmp_path, all_o), tmp_path / "report.json")
    dev_and_test_only = write(tmp_path / "ok", good(), dev=all_o[:1], test=all_o[1:2])  # only train must have some
    assert run(PARAMS, dev_and_test_only, tmp_path / "ok" / "report.json")["success"]
