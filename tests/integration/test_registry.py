"""The registry against a real SeaweedFS: immutable versions, checksums, aliases, concurrency."""

from __future__ import annotations

import functools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.registry import PULL_MARKER, AliasConflict, Registry, RegistryError, directory_digest
from tasks.settings import s3_client

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(local_services) -> Registry:
    # A fresh prefix per test: tests never see each other's versions.
    return Registry(s3_client(local_services), local_services.registry_bucket, f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"id2label": {"0": "O"}}')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 1000)
    return folder


def variant(model_dir: Path, seed: int) -> Path:
    """The model folder with other weights (a different digest), as another training run would leave."""
    (model_dir / "sub" / "weights.bin").write_bytes(bytes([seed % 256]) * 1000 + bytes(range(256)))
    return model_dir


def test_publish_download_roundtrip(registry: Registry, model_dir: Path, tmp_path: Path):
    version = registry.publish("ner", model_dir, {"metrics": {"f1": 0.5}})
    assert version == 1 and registry.versions("ner") == [1]
    out = registry.download("ner", 1, tmp_path / "out")
    assert (out / "sub" / "weights.bin").read_bytes() == (model_dir / "sub" / "weights.bin").read_bytes()
    assert registry.manifest("ner", 1)["metadata"] == {"metrics": {"f1": 0.5}}


def test_versions_are_immutable_and_increase(registry: Registry, model_dir: Path):
    assert [registry.publish("ner", variant(model_dir, i), {}) for i in range(3)] == [1, 2, 3]
    with pytest.raises(RegistryError, match="already exists"):
        registry._put_create_only(registry._key("ner", "2", "manifest.json"), b"{}")


def test_concurrent_publishes_get_distinct_versions(registry: Registry, tmp_path: Path):
    folders = []
    for i in range(4):
        (tmp_path / str(i) / "sub").mkdir(parents=True)
        folders.append(variant(tmp_path / str(i), i))
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda folder: registry.publish("ner", folder, {}), folders))
    assert sorted(versions) == [1, 2, 3, 4]
    assert registry.versions("ner") == [1, 2, 3, 4]


def test_incomplete_version_is_invisible(registry: Registry, model_dir: Path):
    registry.publish("ner", model_dir, {})
    # A crashed publish: claimed and uploaded, but no manifest.
    registry._claim_version("ner")
    registry.client.put_object(Bucket=registry.bucket, Key=registry._key("ner", "2", "files", "x"), Body=b"x")
    assert registry.versions("ner") == [1]
    assert registry.publish("ner", variant(model_dir, 1), {}) == 3


def test_alias_points_only_at_published_versions(registry: Registry, model_dir: Path):
    assert registry.get_alias("ner", "champion") is None
    registry.publish("ner", model_dir, {})
    registry.set_alias("ner", "champion", 1)
    assert registry.get_alias("ner", "champion") == 1
    with pytest.raises(RegistryError, match="no such published version"):
        registry.set_alias("ner", "champion", 7)


def test_tampered_file_fails_download(registry: Registry, model_dir: Path, tmp_path: Path):
    registry.publish("ner", model_dir, {})
    key = registry._key("ner", "1", "files", "config.json")
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=b"{}")
    with pytest.raises(RegistryError, match="checksum mismatch for config.json"):
        registry.download("ner", 1, tmp_path / "out")


def test_a_download_replaces_the_folder_whole_or_leaves_it_as_it_was(registry: Registry, model_dir: Path,
                                                                    tmp_path: Path):
    registry.publish("ner", model_dir, {})
    (model_dir / "extra.txt").write_text("only in v2\n")
    registry.publish("ner", model_dir, {})
    dest = tmp_path / "pulled"
    registry.download("ner", 2, dest)
    registry.download("ner", 1, dest)  # over v2: v2's extra file must not survive
    v1_files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert v1_files == [PULL_MARKER, "config.json", "sub/weights.bin"]
    key = registry._key("ner", "2", "files", "sub/weights.bin")
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=b"tampered")
    with pytest.raises(RegistryError, match="checksum mismatch for sub/weights.bin"):
        registry.download("ner", 2, dest)  # fails half-way: v1 stays, whole
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == v1_files
    assert (dest / "sub" / "weights.bin").read_bytes() == (model_dir / "sub" / "weights.bin").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_an_unknown_model_is_named(registry: Registry, model_dir: Path):
    registry.publish("ner", model_dir, {})
    with pytest.raises(RegistryError, match=r"no model named 'nosuch' in the registry \(models: \['ner'\]\)"):
        registry.resolve("nosuch:champion")


@pytest.mark.parametrize("name", ["", "../etc", "UPPER", "a/b", "x" * 65])
def test_bad_names_rejected(registry: Registry, model_dir: Path, name: str):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.publish(name, model_dir, {})


@pytest.mark.slow  # trains a tiny model, then scores it in a subprocess (~20-60 s)
def test_champion_is_rescored_on_the_current_test_split(registry: Registry, tiny_base: Path, tmp_path: Path):
    import yaml

    from flows.orchestration.champion import champion_metrics
    from flows.orchestration.steps import StageError
    from tasks import evaluate
    from tasks.io import write_jsonl
    from tasks.kinds import kind_for
    from tasks.kinds.ner.records import NerRecord
    from tasks.params import load_params
    from tests.helpers import ROOT, synthetic, train_ner, train_params

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", synthetic(32, 1))
    write_jsonl(data / "dev.jsonl", synthetic(8, 2))
    write_jsonl(data / "test.jsonl", synthetic(12, 3))
    model = tmp_path / "model"
    train_ner(train_params(tiny_base, epochs=1), ["person", "geo-loc"], data, model, tmp_path / "t.json",
              tmp_path / "c.csv")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"]["augmented"] = str(data)
    raw["train"]["max_length"] = 16
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    name = params.registry.model_name
    score = functools.partial(champion_metrics, params, registry, params_file=tmp_path / "params.yaml")
    assert score() is None  # nothing registered yet

    registry.set_alias(name, "champion", registry.publish(name, model, {"metrics": {"f1": 0.99}}))
    expected = evaluate.run(params.evaluate, model, data / "test.jsonl", tmp_path / "e.json", tmp_path / "p.jsonl", 16,
                            kind=kind_for(params))
    rescored = score()  # by `python -m tasks.evaluate --model-dir` in the current directory's code
    untimed = {"latency": None}  # measured anew on each run
    assert rescored.version == 1
    assert rescored.report.model_copy(update=untimed) == expected.model_copy(update=untimed)  # now, not the 0.99

    write_jsonl(data / "test.jsonl", [NerRecord("t:0", ("acme",), ("B-company",))])
    assert "B-company" in score().report.incomparable

    (data / "test.jsonl").write_text("not json\n")  # any other failure is an error, not "incomparable"
    with pytest.raises(StageError, match=r"(?s)scoring .* v1 \(champion\) failed.*test\.jsonl:1: not valid JSON"):
        score()


def test_same_weights_publish_nothing_new(registry: Registry, model_dir: Path):
    first = registry.publish("ner", model_dir, {"registered_at": "monday"})
    # Another run, same weights: its metadata files (metrics, lineage, card) differ, its identity does not.
    (model_dir / "lineage.json").write_text('{"flow_run": "tuesday"}')
    assert registry.publish("ner", model_dir, {"registered_at": "tuesday"}) == first
    assert registry.versions("ner") == [1]
    assert registry.manifest("ner", 1)["metadata"] == {"registered_at": "monday"}
    assert registry.find_digest("ner", directory_digest(model_dir)) == 1
    assert registry.publish("ner", variant(model_dir, 7), {}) == 2


def test_retried_publish_of_a_run_finishes_its_claimed_version(registry: Registry, model_dir: Path):
    """A publish that died after claiming and uploading part of the files: the same flow run's retry
    completes that version; another run with other weights gets the next number."""
    digest = directory_digest(model_dir)
    assert registry._claim_version("ner", digest, "run-a") == 1
    registry.client.put_object(Bucket=registry.bucket, Key=registry._key("ner", "1", "files", "config.json"), Body=b"x")
    assert registry.versions("ner") == []  # nothing visible yet
    assert registry.publish("ner", model_dir, {}, run_id="run-a") == 1
    assert registry.versions("ner") == [1]
    assert registry.manifest("ner", 1)["digest"] == digest
    assert registry.publish("ner", variant(model_dir, 3), {}, run_id="run-b") == 2


def test_concurrent_promotions_one_winner_no_lost_update(registry: Registry, model_dir: Path):
    """Two promotions decided against the same champion: exactly one moves the alias, the other gets an
    AliasConflict naming both versions, and the alias history keeps every real move."""
    versions = [registry.publish("ner", variant(model_dir, i), {}) for i in range(3)]
    registry.set_alias("ner", "champion", 1)
    barrier = threading.Barrier(2)

    def promote(version: int):
        barrier.wait()
        try:
            registry.set_alias("ner", "champion", version, expected=1)
            return version, None
        except AliasConflict as exc:
            return version, str(exc)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(promote, versions[1:]))
    winners = [v for v, error in outcomes if error is None]
    losers = [(v, error) for v, error in outcomes if error is not None]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    winner, (_, message) = winners[0], losers[0]
    assert registry.get_alias("ner", "champion") == winner
    assert f"v{winner}" in message and "champion" in message and "re-run" in message
    assert registry._read_alias("ner", "champion")[0]["history"] == [1]
    assert registry.rollback("ner", "champion") == 1


def test_alias_moves_only_from_the_version_the_gate_saw(registry: Registry, model_dir: Path):
    for i in range(3):
        registry.publish("ner", variant(model_dir, i), {})
    registry.set_alias("ner", "champion", 1, expected=None)
    registry.set_alias("ner", "champion", 2)  # a manual promotion after the gate looked
    with pytest.raises(AliasConflict, match=r"points at v2, not v1"):
        registry.set_alias("ner", "champion", 3, expected=1)
    assert registry.get_alias("ner", "champion") == 2
    registry.set_alias("ner", "champion", 2, expected=1)  # already there (a retried move): no error, no change
    with pytest.raises(AliasConflict, match="points at v2, not v3"):
        registry.rollback("ner", "champion", expected=3)
    assert registry.rollback("ner", "champion", expected=2) == 1


def test_a_stale_alias_write_is_refused(registry: Registry, model_dir: Path):
    """The write itself is conditional: a pointer read before another move cannot overwrite it."""
    for i in range(2):
        registry.publish("ner", variant(model_dir, i), {})
    registry.set_alias("ner", "champion", 1)
    pointer, stale_etag = registry._read_alias("ner", "champion")
    registry.set_alias("ner", "champion", 2)
    with pytest.raises(AliasConflict, match="moved to v2"):
        registry._write_alias("ner", "champion", {"version": 1, "history": []}, stale_etag, "test write")
    assert registry.get_alias("ner", "champion") == 2


def test_rollback_walks_back_through_the_alias_history(registry: Registry, model_dir: Path):
    for i in range(3):
        registry.set_alias("ner", "champion", registry.publish("ner", variant(model_dir, i), {}))
    registry.set_alias("ner", "champion", 3)  # re-pointing at the same version adds no history
    assert [registry.rollback("ner", "champion") for _ in range(2)] == [2, 1]
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("ner", "champion")


def test_rollback_skips_versions_that_were_deleted(registry: Registry, model_dir: Path):
    for i in range(3):
        registry.set_alias("ner", "champion", registry.publish("ner", variant(model_dir, i), {}))
    registry.client.delete_object(Bucket=registry.bucket, Key=registry._key("ner", "2", "manifest.json"))  # as gc does
    assert registry.rollback("ner", "champion") == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("ner", "champion")


def test_variants_travel_inside_the_version_outside_its_digest(registry: Registry, model_dir: Path, tmp_path: Path):
    from flows.registry import local_variant, variants_in

    digest = directory_digest(model_dir)
    (model_dir / "variants" / "onnx").mkdir(parents=True)
    (model_dir / "variants" / "onnx" / "model.onnx").write_bytes(b"onnx" * 100)
    (model_dir / "variants" / "onnx" / "config.json").write_text("{}")
    assert directory_digest(model_dir) == digest  # a no-op run finds its version whatever the variants
    version = registry.publish("ner", model_dir, {})
    manifest = registry.manifest("ner", version)
    assert variants_in(manifest) == ["onnx"]

    only = registry.download("ner", version, tmp_path / "onnx", variant="onnx")
    assert sorted(p.name for p in only.iterdir()) == [PULL_MARKER, "config.json", "model.onnx"]
    bare = registry.download("ner", version, tmp_path / "bare", with_variants=False)
    assert not (bare / "variants").exists() and (bare / "sub" / "weights.bin").is_file()
    whole = registry.download("ner", version, tmp_path / "whole")
    assert local_variant(whole, "onnx").joinpath("model.onnx").read_bytes() == b"onnx" * 100
    with pytest.raises(RegistryError, match=r"ner v1 has no variant 'int8' \(variants: onnx;"):
        registry.download("ner", version, tmp_path / "int8", variant="int8")
    assert not (tmp_path / "int8").exists()
    with pytest.raises(RegistryError, match=r"has no variant 'int8' \(variants: onnx\)"):
        local_variant(whole, "int8")
