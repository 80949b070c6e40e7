"""Every bad input stops the pipeline before training with a message naming the file, line or record.

Each fixture under `fixtures/bad/` goes through the real stage command lines, in a scratch project:
`python -m tasks.ingest` (reading and splitting), then `python -m tasks.validate` (the GX contract).
A bad fixture must end one of them with exit status 1 and one `<stage>: error: ...` message matching
its expected pattern (the training stage depends on the contract, so it never starts); nothing is left
half-written. The good fixtures (every format, encoding and tag scheme we accept) pass both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks import ingest, validate
from tasks.kinds.ner.records import load_jsonl
from tests.helpers import ROOT

FIXTURES = Path(__file__).parent / "fixtures"

# fixture -> (stage that must stop it, pattern its message must match)
BAD = {
    "length_mismatch.jsonl": ("validate", r"length_match .*n_tokens/n_tags.*\n.*length_mismatch\.jsonl:13: n_tokens=3, n_tags=2"),
    "unknown_tag.conll": ("validate", r"tag_in_label_set .*\n.*unknown_tag\.conll:\d+ token 0 'Omar': tag='B-villain'"),
    "undeclared_type.conll": ("validate", r"tag_in_label_set .*\n.*token 3 'Acme': tag='B-company'"),
    "i_without_b.conll": ("validate", r"iob2_valid .*\n.*i_without_b\.conll:\d+: .*'I-person' follows 'O' \(expected B-person"),
    "bioes_read_as_iob2.conll": ("validate", r"'S-person' is not O, B-<type> or I-<type> \(BIOES tags\? set ingest\.tag_scheme: bioes\)"),
    "empty.conll": ("ingest", r"empty\.conll: no sentences found"),
    "only_docstart.conll": ("ingest", r"only_docstart\.conll: no sentences found .*only blank and -DOCSTART- lines"),
    "three_columns.conll": ("ingest", r"three_columns\.conll:24: 3 columns, but line 1 has 2"),
    "missing_tag_column.conll": ("ingest", r"missing_tag_column\.conll:16: expected 'token<TAB>tag'"),
    "mixed_separators.conll": ("ingest", r"mixed_separators\.conll:\d+: separated by spaces, but other lines use tabs"),
    "utf16_no_bom.conll": ("ingest", r"utf16_no_bom\.conll:1: NUL byte .*UTF-16 file without a byte-order mark"),
    "nul_byte.conll": ("ingest", r"nul_byte\.conll:16: NUL byte"),
    "latin1.conll": ("ingest", r"latin1\.conll:16: not valid UTF-8 .*re-encode the file as UTF-8"),
    "long_sentence.conll": ("validate", r"sentence_length .*\n.*long_sentence\.conll:\d+: n_tokens=5000"),
    "all_o.conll": ("validate", r"entity_distribution .*\n.*entity type 'location': ratio=0\.0\n.*entity type 'person'"),
    "missing_type.conll": ("validate", r"entity_distribution .*\n.*entity type 'location': ratio=0\.0"),
    "duplicated_sentences.conll": ("validate", r"duplicate_share \(expect_column_mean_to_be_between on sentences\.is_duplicate\)"),
    "not_json.jsonl": ("ingest", r"not_json\.jsonl:4: not valid JSON .*expected one object"),
    "tokens_as_string.jsonl": ("ingest", r"tokens_as_string\.jsonl:3: 'tokens' must be a list of strings, got str 'Omar waves'"),
    "tags_not_strings.jsonl": ("ingest", r"tags_not_strings\.jsonl:3: every item of 'tags' must be a string, got int 1"),
    "missing_tags_key.jsonl": ("ingest", r"missing_tags_key\.jsonl:3: expected an object with 'tokens' and 'tags' lists, got keys \['labels', 'tokens'\]"),
    "array_line.jsonl": ("ingest", r"array_line\.jsonl:3: expected an object .*got list"),
    "duplicate_ids.jsonl": ("ingest", r"duplicate_ids\.jsonl: record id 'tweet-7' appears twice"),
    "blank_token.jsonl": ("validate", r"token_not_blank .*\n.*blank_token\.jsonl:13 token 1 '  '"),
    "zero_width_char.jsonl": ("validate", r"no_control_characters .*\n.*zero_width_char\.jsonl:13 token 0 'Om\\u200bar'"),
    "empty_sentence.jsonl": ("validate", r"sentence_length .*\n.*empty-one: n_tokens=0"),
    "leaked_dev": ("validate", r"no_leakage .*\n.*dev\.conll:\d+: also_in_train='train\.conll:\d+'"),
    "presplit_without_test": ("ingest", r"presplit_without_test: a pre-split source needs exactly one test\.\* file"),
}

GOOD = {  # fixture -> its tag scheme
    "two_columns.conll": "iob2", "conll2003.conll": "iob2", "records.jsonl": "iob2", "crlf.conll": "iob2",
    "utf8_bom.conll": "iob2", "utf16.conll": "iob2", "no_trailing_newline.conll": "iob2",
    "space_separated.conll": "iob2", "iob1.conll": "iob1", "bioes.conll": "bioes",
}


def project(folder: Path, source: Path, tag_scheme: str = "iob2") -> Path:
    """A scratch project: the repo's params.yaml with the fixture as source and the fixtures' label set."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(source=str(source), tag_scheme=tag_scheme, format="auto")
    params["task"]["labels"] = ["person", "location"]
    params["validate"].update(min_sentences=1, max_tokens_per_sentence=200,
                              max_subword_pieces=400, soft={},
                              reference_profile=str(FIXTURES / "reference_profile.json"))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def run_stages(folder: Path, monkeypatch) -> tuple[str | None, str | None]:
    """Run ingest then validate in `folder`; (stage that stopped, its message) or (None, None)."""
    monkeypatch.chdir(folder)
    for name, main in (("ingest", ingest.main), ("validate", validate.main)):
        try:
            main([])
        except SystemExit as stop:
            assert isinstance(stop.code, str), f"{name} exited with {stop.code!r}, expected a message"
            return name, stop.code
    return None, None


def assert_stopped_with(folder: Path, monkeypatch, expected: tuple[str, str]) -> None:
    """Ingest then validate in the project `folder` stop at `expected` = (stage, message pattern), with one
    `<stage>: error: ...` message and nothing half-written."""
    stage, message = run_stages(folder, monkeypatch)
    expected_stage, pattern = expected
    assert (stage, message is not None) == (expected_stage, True), f"{folder} passed {expected_stage}"
    assert message.startswith(f"{stage}: error: "), message
    assert re.search(pattern, message), message
    if stage == "ingest":  # nothing half-imported is left for a later stage to read
        assert not (folder / "data" / "raw").exists()
    else:  # the contract report records the failure that stopped the run
        report = yaml.safe_load((folder / "data" / "reports" / "contract_raw.json").read_text())
        assert report["success"] is False and report["failed"] >= 1


@pytest.mark.parametrize("fixture", sorted(BAD))
def test_bad_input_stops_before_training_with_its_message(fixture: str, tmp_path: Path, monkeypatch):
    assert_stopped_with(project(tmp_path, FIXTURES / "bad" / fixture), monkeypatch, BAD[fixture])


def test_every_bad_fixture_has_an_expected_message():
    assert sorted(p.name for p in (FIXTURES / "bad").iterdir()) == sorted(BAD)
    assert len(BAD) >= 20


@pytest.mark.parametrize("fixture", sorted(GOOD))
def test_good_input_passes_with_the_same_records(fixture: str, tmp_path: Path, monkeypatch):
    assert run_stages(project(tmp_path, FIXTURES / "good" / fixture, GOOD[fixture]), monkeypatch) == (None, None)
    records = [r for split in ("train", "dev", "test") for r in load_jsonl(tmp_path / "data" / "raw" / f"{split}.jsonl")]
    assert len(records) == 12
    assert sum(t.startswith("B-") for r in records for t in r.tags) == 24  # one person + one place each


def test_the_cli_prints_one_line_without_a_traceback(tmp_path: Path):
    """As `dvc repro` runs it: a separate process, exit status 1, the message, no stack trace."""
    project(tmp_path, FIXTURES / "bad" / "not_json.jsonl")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tasks.ingest"], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("ingest: error: ") and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "data" / "raw").exists()


@pytest.mark.parametrize("fixture", ["zero_width_char.jsonl", "blank_token.jsonl"])
def test_what_cleaning_fixes_only_warns_on_raw_data(fixture: str, tmp_path: Path, monkeypatch, capsys):
    """With the default `validate.soft`, raw data may hold what the clean step removes; the
    contract after cleaning (every check hard) then passes."""
    from tasks import clean

    project(tmp_path, FIXTURES / "bad" / fixture)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["validate"]["soft"] = yaml.safe_load((ROOT / "params.yaml").read_text())["validate"]["soft"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stages(tmp_path, monkeypatch) == (None, None)
    assert "warning (soft, validate.soft)" in capsys.readouterr().out
    clean.main([])
    validate.main(["--data", "clean"])  # raises SystemExit with the message if anything is left
    cleaned = [r for split in ("train", "dev", "test") for r in load_jsonl(tmp_path / "data" / "clean" / f"{split}.jsonl")]
    assert all(t.strip() and "\u200b" not in t for r in cleaned for t in r.tokens)
