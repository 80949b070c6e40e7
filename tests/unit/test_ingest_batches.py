"""A source folder of batch files (growing data): the layouts, the stable split, the report and refusals.

Both kinds: NER (`*.conll`, `*.jsonl`) and text classification (`*.csv`, `*.jsonl`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import ingest
from tasks.io import InputFormatError, official_splits
from tasks.kinds.ner.params import NerIngestParams
from tasks.kinds.ner.records import load_jsonl
from tasks.kinds.textclass.records import load_examples
from tasks.params import load_params
from tests.helpers import ROOT, kind

TEXT_PARAMS = load_params(ROOT / "params-sentiment.yaml").ingest


def params(source: Path) -> NerIngestParams:
    return NerIngestParams(source=str(source), format="auto", tag_scheme="iob2", train_fraction=0.7,
                           dev_fraction=0.18, split_salt="s")


def conll(path: Path, words: list[str]) -> Path:
    """One two-token sentence per word: `<word> runs`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\tB-person\nruns\tO\n\n" for word in words))
    return path


def jsonl(path: Path, words: list[str], ids: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"tokens": [word, "runs"], "tags": ["B-person", "O"]} | ({"id": ids[i]} if ids else {})
            for i, word in enumerate(words)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def split_of_words(raw: Path) -> dict[str, str]:
    """Each imported sentence's first word -> its split."""
    return {r.tokens[0]: split for split in ("train", "dev", "test") for r in load_jsonl(raw / f"{split}.jsonl")}


def test_a_flat_folder_of_batches_is_hash_split_and_reported_per_batch(tmp_path: Path):
    source = tmp_path / "data"
    conll(source / "2026-01.conll", [f"jan{i}" for i in range(40)])
    jsonl(source / "batches" / "2026-02.jsonl", [f"feb{i}" for i in range(30)])
    report = ingest.run(params(source), tmp_path / "raw", kind())

    assert report["split_by"] == "hash" and not official_splits(tmp_path / "raw")
    assert report["sentences"] == 70 and sum(report["splits"].values()) == 70
    assert [(b["file"], b["rows"]) for b in report["batches"]] == [("2026-01.conll", 40), ("batches/2026-02.jsonl", 30)]
    for batch in report["batches"]:
        assert sum(batch["splits"].values()) == batch["rows"]
    assert {split: sum(b["splits"][split] for b in report["batches"]) for split in report["splits"]} == report["splits"]
    every_split = {split for split in split_of_words(tmp_path / "raw").values()}
    assert every_split == {"train", "dev", "test"}
    copied = tmp_path / "raw" / "source" / "batches" / "2026-02.jsonl"
    assert copied.read_bytes() == (source / "batches" / "2026-02.jsonl").read_bytes()
    assert json.loads((tmp_path / "raw" / "ingest_report.json").read_text()) == report


def test_adding_a_batch_never_moves_an_existing_row(tmp_path: Path):
    source = tmp_path / "data"
    conll(source / "a.conll", [f"old{i}" for i in range(300)])
    ingest.run(params(source), tmp_path / "raw", kind())
    before = split_of_words(tmp_path / "raw")

    conll(source / "batches" / "b.conll", [f"new{i}" for i in range(300)])
    jsonl(source / "0-first-by-name.jsonl", [f"early{i}" for i in range(50)])  # sorts before the old file
    ingest.run(params(source), tmp_path / "raw", kind())
    after = split_of_words(tmp_path / "raw")

    assert len(after) == 650
    assert {word: after[word] for word in before} == before


def test_the_order_is_the_sorted_names_whatever_the_listing(tmp_path: Path):
    source = tmp_path / "data"
    for name in ("c.conll", "a.conll", "b.conll"):
        conll(source / name, [f"{name[0]}{i}" for i in range(20)])
    report = ingest.run(params(source), tmp_path / "raw", kind())
    assert [b["file"] for b in report["batches"]] == ["a.conll", "b.conll", "c.conll"]
    train = [r.tokens[0][0] for r in load_jsonl(tmp_path / "raw" / "train.jsonl")]
    assert train == sorted(train)  # the rows follow the files' order


def official(source: Path) -> Path:
    for split, n in (("train", 20), ("dev", 5), ("test", 5)):
        conll(source / f"{split}.conll", [f"{split}{i}" for i in range(n)])
    (source / "README.md").write_text("# a benchmark\n")  # beside official splits: not data, not listed
    return source


def test_beside_official_splits_the_batches_join_train_only(tmp_path: Path):
    source = official(tmp_path / "bench")
    conll(source / "batches" / "new.conll", [f"new{i}" for i in range(40)])
    report = ingest.run(params(source), tmp_path / "raw", kind())

    assert report["split_by"] == "source" and official_splits(tmp_path / "raw")
    assert report["splits"] == {"train": 60, "dev": 5, "test": 5}
    assert report["batches"] == [{"file": "batches/new.conll", "rows": 40, "splits": {"train": 40}}]
    assert report["ignored"] == []
    splits = split_of_words(tmp_path / "raw")
    assert {splits[f"new{i}"] for i in range(40)} == {"train"}
    assert (tmp_path / "raw" / "dev.source.conll").exists()  # the official files are copied as before


def test_files_of_other_types_are_ignored_and_listed(tmp_path: Path):
    source = tmp_path / "data"
    conll(source / "a.conll", ["alice"] * 1 + [f"w{i}" for i in range(10)])
    (source / "notes.txt").write_text("who labelled what\n")
    (source / ".DS_Store").write_bytes(b"\0\1")  # hidden: not even listed
    (source / "batches").mkdir()
    (source / "batches" / "b.tsv").write_text("x\ty\n")
    (source / "old").mkdir()  # another subfolder: not read
    conll(source / "old" / "c.conll", ["never"])
    report = ingest.run(params(source), tmp_path / "raw", kind())
    assert report["ignored"] == ["notes.txt", "batches/b.tsv"]
    assert report["sentences"] == 11 and "never" not in split_of_words(tmp_path / "raw")
    assert ingest.summary(report).endswith("1 batch file(s): a.conll (11); ignored (not a type the kind reads): "
                                           "notes.txt, batches/b.tsv")


@pytest.mark.parametrize("contents", [{}, {"README.md": "# nothing yet\n"}, {"batches/notes.md": "-"}],
                         ids=["empty", "only-a-readme", "only-notes-in-batches"])
def test_a_folder_without_data_is_a_clear_error(tmp_path: Path, contents: dict[str, str]):
    source = tmp_path / "data"
    source.mkdir()
    for name, text in contents.items():
        (source / name).parent.mkdir(exist_ok=True)
        (source / name).write_text(text)
    with pytest.raises(InputFormatError, match=r"data: no data: expected batch files \(\*\.conll, \*\.jsonl\) in "
                                               r"it or in batches/, or one train\.\*, dev\.\* and test\.\* file"):
        ingest.run(params(source), tmp_path / "raw", kind())
    assert not (tmp_path / "raw").exists()


def test_a_bad_batch_names_file_and_line_and_leaves_the_last_import_intact(tmp_path: Path):
    source = tmp_path / "data"
    conll(source / "a.conll", [f"w{i}" for i in range(10)])
    ingest.run(params(source), tmp_path / "raw", kind())
    before = {p.name: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}

    bad = conll(source / "batches" / "b.conll", ["fine"])
    bad.write_text(bad.read_text() + "untagged\n")
    with pytest.raises(InputFormatError, match=r"batches/b\.conll:4: expected 'token<TAB>tag'"):
        ingest.run(params(source), tmp_path / "raw", kind())
    assert {p.name: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()} == before
    assert not (tmp_path / "raw.tmp").exists()


def test_an_id_repeated_across_batches_names_both_files(tmp_path: Path):
    source = tmp_path / "data"
    jsonl(source / "a.jsonl", ["x", "y"], ids=["1", "2"])
    jsonl(source / "b.jsonl", ["z"], ids=["2"])
    with pytest.raises(InputFormatError, match=r"b\.jsonl: record id '2' is also in .*a\.jsonl; ids must be unique"):
        ingest.run(params(source), tmp_path / "raw", kind())


def test_a_batch_id_repeating_an_official_train_id_is_refused(tmp_path: Path):
    source = official(tmp_path / "bench")
    jsonl(source / "batches" / "b.jsonl", ["z"], ids=["train.conll:1"])
    with pytest.raises(InputFormatError, match=r"b\.jsonl: record id 'train\.conll:1' is also in .*train\.conll"):
        ingest.run(params(source), tmp_path / "raw", kind())


def test_a_batch_linking_out_of_the_repository_is_refused(tmp_path: Path, monkeypatch):
    repo = tmp_path / "repo"
    outside = conll(tmp_path / "secret.conll", ["secret"])
    conll(repo / "data" / "a.conll", ["w"])
    (repo / "data" / "batches").mkdir()
    (repo / "data" / "batches" / "b.conll").symlink_to(outside)
    monkeypatch.chdir(repo)
    with pytest.raises(InputFormatError, match=r"b\.conll: a symbolic link to .*secret\.conll, outside"):
        ingest.run(params(Path("data")), Path("raw"), kind())


# ---------------------------------------------------------------- text classification


def csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    return path


def texts_by_split(raw: Path) -> dict[str, str]:
    return {e.text: split for split in ("train", "dev", "test") for e in load_examples(raw / f"{split}.jsonl")}


def test_text_batches_in_a_flat_folder_are_stable_when_a_batch_is_added(tmp_path: Path):
    source = tmp_path / "tweets"
    csv(source / "a.csv", [(f"old text {i}", "positive" if i % 2 else "negative") for i in range(200)])
    (source / "labelling-guide.pdf").write_bytes(b"%PDF")
    text_kind = kind("sequence-classification")
    first = ingest.run(TEXT_PARAMS.model_copy(update={"source": str(source)}), tmp_path / "raw", text_kind)
    before = texts_by_split(tmp_path / "raw")

    (source / "batches").mkdir()
    (source / "batches" / "b.jsonl").write_text("".join(
        json.dumps({"text": f"new text {i}", "label": "neutral"}) + "\n" for i in range(100)))
    second = ingest.run(TEXT_PARAMS.model_copy(update={"source": str(source)}), tmp_path / "raw", text_kind)
    after = texts_by_split(tmp_path / "raw")

    assert first["ignored"] == second["ignored"] == ["labelling-guide.pdf"]
    assert [(b["file"], b["rows"]) for b in second["batches"]] == [("a.csv", 200), ("batches/b.jsonl", 100)]
    assert len(after) == 300 and {text: after[text] for text in before} == before


def test_text_batches_beside_official_splits_join_train(tmp_path: Path):
    source = tmp_path / "bench"
    for split, n in (("train", 20), ("dev", 5), ("test", 5)):
        csv(source / f"{split}.csv", [(f"{split} text {i}", "positive") for i in range(n)])
    csv(source / "batches" / "extra.csv", [(f"extra text {i}", "negative") for i in range(7)])
    report = ingest.run(TEXT_PARAMS.model_copy(update={"source": str(source)}), tmp_path / "raw",
                        kind("sequence-classification"))
    assert report["splits"] == {"train": 27, "dev": 5, "test": 5}
    assert report["batches"] == [{"file": "batches/extra.csv", "rows": 7, "splits": {"train": 7}}]


def test_a_bad_text_batch_names_file_and_line(tmp_path: Path):
    source = tmp_path / "tweets"
    csv(source / "a.csv", [("fine text", "positive")])
    (source / "b.csv").write_text("text,label\ngood,positive\n,negative\n")
    with pytest.raises(InputFormatError, match=r"b\.csv:3: 'text' must be non-empty text"):
        ingest.run(TEXT_PARAMS.model_copy(update={"source": str(source)}), tmp_path / "raw",
                   kind("sequence-classification"))
    assert not (tmp_path / "raw").exists()


def test_the_prefect_ingest_table_has_a_row_per_batch(tmp_path: Path):
    from flows.orchestration.reports import ingest_table

    source = official(tmp_path / "bench")
    conll(source / "batches" / "new.conll", [f"new{i}" for i in range(4)])
    (source / "batches" / "guide.pdf").write_bytes(b"%PDF")
    rows, description = ingest_table(ingest.run(params(source), tmp_path / "raw", kind()))
    assert rows[3:] == [{"split": "batch batches/new.conll (train 4)", "sentences": 4}]
    assert description.endswith("bench; ignored (not a type the kind reads): batches/guide.pdf")


# ---------------------------------------------------------------- record ids, checked while streaming


def test_an_id_repeated_in_one_file_gets_the_readers_message(tmp_path: Path):
    source = jsonl(tmp_path / "one.jsonl", ["a", "b", "c"], ids=["x", "y", "x"])
    with pytest.raises(InputFormatError, match=r"one\.jsonl: record id 'x' appears twice; ids must be unique"):
        ingest.run(params(source), tmp_path / "raw", kind())
    texts = tmp_path / "d.csv"
    texts.write_text("id,text,label\nx,one,positive\ny,two,negative\nx,three,positive\n")
    with pytest.raises(InputFormatError, match=r"d\.csv: id 'x' appears twice \(examples 1 and 3\)"):
        ingest.run(TEXT_PARAMS.model_copy(update={"source": str(texts)}), tmp_path / "raw",
                   kind("sequence-classification"))
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.tmp").exists()


def test_distinct_ids_that_share_a_hash_pass(tmp_path: Path, monkeypatch):
    source = tmp_path / "data"
    jsonl(source / "a.jsonl", ["a", "b"], ids=["1", "2"])
    jsonl(source / "b.jsonl", ["c"], ids=["3"])
    monkeypatch.setattr(ingest, "hash", lambda _: 7, raising=False)  # every id collides on its 64-bit hash
    assert ingest.run(params(source), tmp_path / "raw", kind())["sentences"] == 3


def test_the_streamed_import_writes_what_the_rows_in_memory_hold(tmp_path: Path):
    source = official(tmp_path / "bench")
    conll(source / "batches" / "new.conll", [f"new{i}" for i in range(40)])
    ingest.run(params(source), tmp_path / "raw", kind())
    splits, _ = ingest.read_splits(source, params(source), kind())
    for split, rows in splits.items():
        assert load_jsonl(tmp_path / "raw" / f"{split}.jsonl") == rows
