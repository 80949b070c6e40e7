import json
from pathlib import Path

import pytest

from tasks.io import InputFormatError, write_jsonl
from tasks.kinds.ner.records import NerRecord, load_jsonl, read_records


def test_conll_four_columns_and_docstart(tmp_path: Path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-org\nrejects VBZ B-VP O\n-DOCSTART- -X- -X- O\nHi UH O O\n")
    records = read_records(path)
    assert [r.tokens for r in records] == [("EU", "rejects"), ("Hi",)]
    assert [r.tags for r in records] == [("B-org", "O"), ("O",)]
    assert [r.id for r in records] == ["a.conll:3", "a.conll:6"]


def test_tab_separated_tokens_may_hold_spaces(tmp_path: Path):
    path = tmp_path / "a.conll"
    path.write_text("New York\tB-loc\nrocks\tO\n")
    assert read_records(path)[0].tokens == ("New York", "rocks")


def test_cr_only_line_ends_and_utf16_are_read(tmp_path: Path):
    path = tmp_path / "mac.conll"
    path.write_bytes("Zoë\tB-per\rsings\tO\r".encode("utf-16"))
    assert read_records(path)[0].tokens == ("Zoë", "sings")


@pytest.mark.parametrize(("scheme", "tags"), [
    ("iob1", ["I-per", "I-per", "B-per", "O", "I-loc"]),
    ("bioes", ["B-per", "E-per", "S-per", "O", "S-loc"]),
    ("iob2", ["B-per", "I-per", "B-per", "O", "B-loc"]),
])
def test_tag_schemes_are_converted_to_iob2(tmp_path: Path, scheme: str, tags: list[str]):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tokens": list("abcde"), "tags": tags}) + "\n")
    assert read_records(path, tag_scheme=scheme)[0].tags == ("B-per", "I-per", "B-per", "O", "B-loc")


def test_conll_one_column_line_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.conll"
    path.write_text("Hello\tO\nworld\n")
    with pytest.raises(InputFormatError, match=r"bad\.conll:2: expected 'token<TAB>tag'"):
        read_records(path)


def test_non_utf8_names_line(tmp_path: Path):
    path = tmp_path / "latin.conll"
    path.write_bytes(b"ok\tO\n\ncaf\xe9\tO\n")
    with pytest.raises(InputFormatError, match=r"latin\.conll:3: not valid UTF-8"):
        read_records(path)


def test_bom_and_crlf_are_accepted(tmp_path: Path):
    path = tmp_path / "win.conll"
    path.write_bytes(b"\xef\xbb\xbfParis\tB-loc\r\n\r\n")
    assert read_records(path)[0].tokens == ("Paris",)


def test_empty_file_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.conll"
    path.write_text("\n\n")
    with pytest.raises(InputFormatError, match="no sentences found"):
        read_records(path)


def test_jsonl_roundtrip_and_bad_rows(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [NerRecord("x", ("a", "b"), ("O", "B-t"))])
    assert load_jsonl(path)[0] == NerRecord("x", ("a", "b"), ("O", "B-t"))
    path.write_text('{"tokens": ["a"], "tags": ["O"]}\n{"tokens": "a"}\n')
    with pytest.raises(InputFormatError, match=r"d\.jsonl:2: expected an object with 'tokens' and 'tags'"):
        read_records(path)
    path.write_text("{nope\n")
    with pytest.raises(InputFormatError, match=r"d\.jsonl:1: not valid JSON"):
        read_records(path)
