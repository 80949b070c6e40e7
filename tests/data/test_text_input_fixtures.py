"""Every bad classification input stops the pipeline before training with a message naming the file,
line or record; every good one (each encoding, line ending and quoting we accept) imports the same texts.

The twin of tests/data/test_input_fixtures.py for `task: sequence-classification`: each fixture under
`fixtures/text_bad/` goes through the real `ingest` then `validate` stage functions in a scratch project
made from params-sentiment.yaml, and must stop one of them with its expected message, leaving nothing
half-written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.kinds.textclass.records import load_examples
from tests.data.test_input_fixtures import assert_stopped_with, run_stages
from tests.helpers import ROOT

FIXTURES = Path(__file__).parent / "fixtures"

# fixture -> (stage that must stop it, pattern its message must match)
BAD = {
    "extra_field.csv": ("ingest", r"extra_field\.csv:5: 3 fields, but the header has 2 \(text,label\); quote a text "
                                  r'that holds a comma, e\.g\. "hello, world",positive'),
    "missing_field.csv": ("ingest", r"missing_field\.csv:6: 1 field, but the header has 2 \(text,label\); every row"),
    "unterminated_quote.csv": ("ingest", r"unterminated_quote\.csv:4: a quoted field opens in this row and never "
                                         r"closes \(it runs to line 13\)"),
    "stray_quote.csv": ("ingest", r"stray_quote\.csv:3: a quoted field must end with a quote followed by a comma"),
    "quote_swallows_rows.csv": ("ingest", r"quote_swallows_rows\.csv:4: a quoted field must end with a quote .*"
                                          r"\(the row runs to line 7\)"),
    "latin1.csv": ("ingest", r"latin1\.csv:7: not valid UTF-8 .*re-encode the file as UTF-8"),
    "nul_byte.csv": ("ingest", r"nul_byte\.csv:5: NUL byte"),
    "utf16_no_bom.csv": ("ingest", r"utf16_no_bom\.csv:1: NUL byte .*UTF-16 file without a byte-order mark"),
    "no_text_column.csv": ("ingest", r"no_text_column\.csv:2: no 'text' column \(columns: \['label', 'tweet'\]\)"),
    "no_label_column.csv": ("ingest", r"no_label_column\.csv:2: no 'label' column "
                                      r"\(columns: \['sentiment', 'text'\]\)"),
    "empty_text.csv": ("ingest", r"empty_text\.csv:6: 'text' must be non-empty text, got ''"),
    "empty_label.csv": ("ingest", r"empty_label\.csv:8: 'label' must be one label \(text or integer\), got ''"),
    "pipe_in_label.csv": ("ingest", r"pipe_in_label\.csv:9: 'label' is 'positive\|negative', but '\|' separates "
                                    r"the labels of a multi-label example"),
    "header_only.csv": ("ingest", r"header_only\.csv: no examples"),
    "empty.csv": ("ingest", r"empty\.csv: no examples"),
    "repeated_header.csv": ("ingest", r"repeated_header\.csv:1: the header must name each column once"),
    "not_json.jsonl": ("ingest", r"not_json\.jsonl:4: not valid JSON .*expected one object such as "
                                 r'\{"text": "\.\.\.", "label": "\.\.\."\} per line'),
    "array_line.jsonl": ("ingest", r"array_line\.jsonl:3: expected a JSON object .*got list"),
    "text_not_string.jsonl": ("ingest", r"text_not_string\.jsonl:5: 'text' must be non-empty text, got 42"),
    "label_is_list.jsonl": ("ingest", r"label_is_list\.jsonl:6: 'label' must be one label \(text or integer\), "
                                      r"got \['positive'\]"),
    "label_is_bool.jsonl": ("ingest", r"label_is_bool\.jsonl:2: 'label' must be one label \(text or integer\), "
                                      r"got True"),
    "duplicate_ids.jsonl": ("ingest", r"duplicate_ids\.jsonl: id 't3' appears twice \(examples 4 and 9\)"),
    "unknown_label.csv": ("validate", r"label_in_set .*\n.*unknown_label:9.*'angry'"),
    "zero_width_char.csv": ("validate", r"no_control_characters .*\n.*zero_width_char:10"),
    "long_text.csv": ("validate", r"sentence_length .*\n.*long_text:11: n_words=300"),
    "duplicated_texts.csv": ("validate", r"duplicate_share \(expect_column_mean_to_be_between on "),
}

GOOD = ["plain.csv", "utf8_bom.csv", "crlf.csv", "utf16.csv", "no_trailing_newline.csv", "quoted.csv",
        "texts.jsonl", "line_separators.jsonl"]


def project(folder: Path, source: Path, soft: dict | None = None) -> Path:
    """A scratch project: params-sentiment.yaml with the fixture as source, every check hard by default."""
    folder.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params-sentiment.yaml").read_text())
    params["ingest"].update(source=str(source), format="auto")
    params["validate"].update(min_sentences=1, class_share=[0.0, 1.0], max_tokens_per_sentence=200, soft=soft or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def imported(folder: Path) -> list:
    examples = [e for split in ("train", "dev", "test") for e in load_examples(folder / "data/raw" / f"{split}.jsonl")]
    return sorted(examples, key=lambda e: e.text)


@pytest.mark.parametrize("fixture", sorted(BAD))
def test_bad_text_input_stops_before_training_with_its_message(fixture: str, tmp_path: Path, monkeypatch):
    assert_stopped_with(project(tmp_path, FIXTURES / "text_bad" / fixture), monkeypatch, BAD[fixture])


def test_every_bad_text_fixture_has_an_expected_message():
    assert sorted(p.name for p in (FIXTURES / "text_bad").iterdir()) == sorted(BAD)
    assert len(BAD) >= 20


@pytest.mark.parametrize("fixture", GOOD)
def test_good_text_input_imports_the_same_texts(fixture: str, tmp_path: Path, monkeypatch):
    assert run_stages(project(tmp_path / "plain", FIXTURES / "text_good" / "plain.csv"), monkeypatch) == (None, None)
    # U+0085 is a control character: the raw contract warns about it (the default), cleaning removes it.
    soft = {"raw": ["no_control_characters"]} if fixture == "line_separators.jsonl" else None
    folder = project(tmp_path / "fixture", FIXTURES / "text_good" / fixture, soft)
    assert run_stages(folder, monkeypatch) == (None, None)
    got, plain = imported(folder), imported(tmp_path / "plain")
    assert [e.label for e in got] == [e.label for e in plain] and len(got) == 12
    if fixture == "quoted.csv":  # a comma, a doubled quote and a line break inside quotes survive
        assert all(e.text.endswith(', "quoted"\nand on two lines') for e in got)
    elif fixture == "line_separators.jsonl":  # split on LF only: the separators stay inside their texts
        separators = sorted(ch for e in got for ch in e.text if ch in "\u2028\u2029\u0085")
        assert separators == sorted("\u2028\u2029\u0085" * 4)
    else:
        assert [e.text for e in got] == [e.text for e in plain]
