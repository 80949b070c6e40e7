"""Hostile or huge inputs to the source readers (review 2026-12b, "bad inputs no fixture covers"; N7, L8):
each ends in one short InputFormatError naming the file and line, for both task kinds, or is read.

Every error must quote at most ~QUOTE_LIMIT characters of what it found, so a 100 MB line never reaches a
log, the flow run's state or a webhook; and the readers go through the file a line at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import ingest
from tasks import io as io_module
from tasks.io import QUOTE_LIMIT, InputFormatError, excerpt, read_lines
from tasks.kinds.ner.records import read_records, read_untagged
from tasks.kinds.textclass import records
from tasks.kinds.textclass.records import read_text_examples, read_unlabelled
from tasks.params import ParamsError, load_params, parse_params
from tests.helpers import ROOT, kind

NESTED = "[" * 100_000 + "]" * 100_000
HUGE = "x" * 2_000_000  # stands in for the review's 100 MB line: the same code path, a faster test
SHORT_ENOUGH = QUOTE_LIMIT + 250  # the message around the quoted part: path, line number, what was expected


def error_of(read, *args) -> str:
    with pytest.raises(InputFormatError) as caught:
        read(*args)
    return str(caught.value)


def assert_short_and_named(message: str, path: Path, line_no: int) -> None:
    assert message.startswith(f"{path}:{line_no}: "), message[:300]
    assert "\n" not in message and len(message) < len(str(path)) + SHORT_ENOUGH, len(message)


# ------------------------------------------------------------------ JSON nested 100k deep


@pytest.mark.parametrize("read", [
    lambda p: read_records(p, "jsonl"),  # NER, tagged
    lambda p: read_untagged(p, "jsonl"),  # NER, sentences to tag
    lambda p: read_text_examples(p),  # text classification
], ids=["ner-records", "ner-untagged", "textclass"])
def test_json_nested_100k_deep_is_one_line_naming_file_and_line(tmp_path: Path, read):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"tokens": ["a"], "tags": ["O"], "text": "a", "label": "x"}\n' + NESTED + "\n")
    message = error_of(read, path)
    assert_short_and_named(message, path, 2)
    assert "nested too deeply" in message


# ------------------------------------------------------------------ CSV fields over the csv module's 128 KiB


def test_a_quoted_csv_text_over_128_kib_is_read(tmp_path: Path):
    text = "word, " * 40_000  # 240 000 characters with commas: must be quoted
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{text}",positive\nshort,negative\n', encoding="utf-8")
    examples = read_text_examples(path)
    assert [len(e.text) for e in examples] == [len(text.strip()), 5]


def test_a_field_over_the_limit_is_refused_for_its_size_not_called_an_unclosed_quote(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(records, "MAX_CSV_FIELD", 1000)
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{"y" * 2000}",positive\n', encoding="utf-8")
    message = error_of(read_text_examples, path)
    assert_short_and_named(message, path, 2)
    assert "a field runs over 1000 characters" in message and "a quoted field opens" not in message


def test_an_unclosed_quote_is_still_named_as_one(tmp_path: Path):
    path = tmp_path / "open.csv"
    path.write_text('text,label\n"never closed,positive\nnext,negative\n', encoding="utf-8")
    assert "never closes (it runs to line 3)" in error_of(read_text_examples, path)


# ------------------------------------------------------------------ a huge line is quoted, never echoed whole


@pytest.mark.parametrize(("name", "content", "line_no", "read"), [
    ("columns.conll", f"a\tO\n{HUGE}\tb\tO\n", 2, read_records),  # 3 columns after 2
    ("separators.conll", f"a\tO\n{HUGE} B-x\n", 2, read_records),  # spaces in a tab file
    ("no_tag.conll", f"{HUGE}\n", 1, read_records),  # one column
    ("tokens.jsonl", f'{{"tokens": "{HUGE}", "tags": []}}\n', 1, read_records),
    ("untagged.jsonl", f'{{"tokens": ["a", {len(HUGE)}], "id": "{HUGE}"}}\n', 1, read_untagged),
    ("blank.jsonl", f'{{"text": "{" " * len(HUGE)}", "label": "x"}}\n', 1, read_text_examples),
    ("label.jsonl", f'{{"text": "t", "label": ["{HUGE}"]}}\n', 1, read_text_examples),
    ("pipe.csv", f"text,label\nt,{HUGE}|b\n", 2, read_text_examples),
], ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "")
def test_an_error_quotes_at_most_a_few_hundred_characters_of_a_huge_line(tmp_path: Path, name: str, content: str,
                                                                          line_no: int, read):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert_short_and_named(error_of(read, path), path, line_no)


def test_a_txt_file_of_conll_is_refused_quoting_a_short_excerpt(tmp_path: Path):
    path = tmp_path / "conll.txt"
    path.write_text(f"{HUGE} O\nb O\n")
    message = error_of(read_untagged, path)
    assert "so this is CoNLL" in message and len(message) < len(str(path)) + SHORT_ENOUGH


def test_an_excerpt_says_how_long_the_whole_was():
    assert excerpt(HUGE) == repr("x" * QUOTE_LIMIT) + f"... ({len(HUGE)} characters)"
    assert excerpt("short") == "'short'"
    assert len(excerpt(list(range(100_000)))) <= QUOTE_LIMIT + 3


# ------------------------------------------------------------------ a line at a time


def test_lines_are_read_a_block_at_a_time_not_the_whole_file_first(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(io_module, "_BLOCK", 8)  # a block of 8 bytes: each line needs one or two
    path = tmp_path / "late.conll"
    path.write_bytes(b"a\tO\r\nb\tO\rc\tO\n\xff\tO\n")  # CRLF, CR, then a byte that is not UTF-8 on line 4
    lines = read_lines(path)
    assert [next(lines), next(lines), next(lines)] == [(1, "a\tO"), (2, "b\tO"), (3, "c\tO")]
    with pytest.raises(InputFormatError, match=r"late\.conll:4: not valid UTF-8 \(byte offset 13\)"):
        next(lines)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_block_edges_never_split_a_character_a_crlf_or_a_long_line(tmp_path: Path, monkeypatch, block: int):
    monkeypatch.setattr(io_module, "_BLOCK", block)
    text = "Zoë\tB-per\r\n\r\n" + "ü" * 50 + "\tO\rlast\tO\r"
    path = tmp_path / "edges.conll"
    path.write_bytes(text.encode("utf-8"))
    assert [line for _, line in read_lines(path)] == ["Zoë\tB-per", "", "ü" * 50 + "\tO", "last\tO"]
    path.write_bytes(text.encode("utf-16"))
    assert [line for _, line in read_lines(path)] == ["Zoë\tB-per", "", "ü" * 50 + "\tO", "last\tO"]


def test_utf16_and_a_bom_read_line_by_line_as_before(tmp_path: Path):
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes("Zoë sings\r\nhere\rtoo\n".encode("utf-16"))
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfZo\xc3\xab sings\n\nhere\n")
    assert list(read_lines(utf16)) == [(1, "Zoë sings"), (2, "here"), (3, "too")]
    assert list(read_lines(bom)) == [(1, "Zoë sings"), (2, ""), (3, "here")]
    assert [s.tokens for s in read_unlabelled(bom)] == [("Zoë", "sings"), ("here",)]


# ------------------------------------------------------------------ a link out of the data folder


def linked_folder(tmp_path: Path, files: dict[str, str], secret_name: str) -> tuple[Path, Path, Path]:
    """A repository holding data/corpus/ with `files`, whose `secret_name` links to a file outside it."""
    repo, secret = tmp_path / "repo", tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    folder = repo / "data" / "corpus"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / secret_name).symlink_to(secret)
    return repo, folder, secret


@pytest.mark.parametrize(("task", "files", "secret_name"), [
    ("token-classification", {"dev.conll": "a\tO\n", "test.conll": "b\tO\n"}, "train.conll"),
    ("sequence-classification", {"dev.csv": "text,label\na,x\n", "test.csv": "text,label\nb,y\n"}, "train.csv"),
])
def test_a_link_out_of_the_repository_in_a_data_folder_is_refused_by_name(tmp_path: Path, monkeypatch, task: str,
                                                                         files: dict, secret_name: str):
    repo, folder, secret = linked_folder(tmp_path, files, secret_name)
    monkeypatch.chdir(repo)
    task_kind = kind(task)
    params = load_params(ROOT / ("params.yaml" if task == "token-classification" else "params-sentiment.yaml"))
    message = error_of(ingest.run, params.ingest.model_copy(update={"source": "data/corpus"}), repo / "raw",
                       task_kind)
    assert message.startswith(f"data/corpus/{secret_name}: a symbolic link to {secret}, outside the repository")
    assert "\n" not in message and not (repo / "raw").exists() and not (repo / "raw.tmp").exists()


def test_a_link_inside_the_repository_is_read(tmp_path: Path, monkeypatch):
    repo, folder, _ = linked_folder(tmp_path, {"dev.conll": "a\tO\n", "test.conll": "b\tO\n"}, "secret.txt")
    (repo / "shared.conll").write_text("c\tO\n")
    (folder / "train.conll").symlink_to(repo / "shared.conll")
    monkeypatch.chdir(repo)
    params = load_params(ROOT / "params.yaml").ingest.model_copy(update={"source": "data/corpus"})
    assert ingest.run(params, repo / "raw", kind())["splits"] == {"train": 1, "dev": 1, "test": 1}


# ------------------------------------------------------------------ train.max_length


@pytest.mark.parametrize("value", [1e9, 8193])
def test_a_max_length_beyond_any_encoder_is_refused_by_name(value):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["max_length"] = value
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.max_length: Input should be less than or equal "
                                          r"to 8192"):
        parse_params(raw, "params.yaml")
    raw["train"]["max_length"] = 8192
    assert parse_params(raw, "params.yaml").train.max_length == 8192
