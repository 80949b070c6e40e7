"""The registry against a real SeaweedFS: immutable versions, checksums, aliases, concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.registry import Registry, RegistryError
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


def test_publish_download_roundtrip(registry: Registry, model_dir: Path, tmp_path: Path):
    version = registry.publish("ner", model_dir, {"metrics": {"f1": 0.5}})
    assert version == 1 and registry.versions("ner") == [1]
    out = registry.download("ner", 1, tmp_path / "out")
    assert (out / "sub" / "weights.bin").read_bytes() == (model_dir / "sub" / "weights.bin").read_bytes()
    assert registry.manifest("ner", 1)["metadata"] == {"metrics": {"f1": 0.5}}


def test_versions_are_immutable_and_increase(registry: Registry, model_dir: Path):
    assert [registry.publish("ner", model_dir, {}) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RegistryError, match="already exists"):
        registry._put_create_only(registry._key("ner", "2", "manifest.json"), b"{}")


def test_concurrent_publishes_get_distinct_versions(registry: Registry, model_dir: Path):
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: registry.publish("ner", model_dir, {}), range(4)))
    assert sorted(versions) == [1, 2, 3, 4]
    assert registry.versions("ner") == [1, 2, 3, 4]


def test_incomplete_version_is_invisible(registry: Registry, model_dir: Path):
    registry.publish("ner", model_dir, {})
    # A crashed publish: claimed and uploaded, but no manifest.
    registry._claim_version("ner")
    registry.client.put_object(Bucket=registry.bucket, Key=registry._key("ner", "2", "files", "x"), Body=b"x")
    assert registry.versions("ner") == [1]
    assert registry.publish("ner", model_dir, {}) == 3


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


@pytest.mark.parametrize("name", ["", "../etc", "UPPER", "a/b", "x" * 65])
def test_bad_names_rejected(registry: Registry, model_dir: Path, name: str):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.publish(name, model_dir, {})


def test_champion_is_rescored_on_the_current_test_split(registry: Registry, tiny_base: Path, tmp_path: Path):
    import yaml

    from flows.champion import champion_metrics
    from tasks import evaluate, train
    from tasks.params import load_params
    from tasks.records import NerRecord, write_jsonl
    from tests.helpers import ROOT, synthetic, train_params

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", synthetic(32, 1))
    write_jsonl(data / "dev.jsonl", synthetic(8, 2))
    write_jsonl(data / "test.jsonl", synthetic(12, 3))
    model = tmp_path / "model"
    train.run(train_params(tiny_base, epochs=1), ["person", "geo-loc"], data, model, tmp_path / "t.json",
              tmp_path / "c.csv")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"]["augmented"] = str(data)
    raw["train"]["max_length"] = 16
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    name = params.registry.model_name
    assert champion_metrics(params, registry) is None  # nothing registered yet

    registry.set_alias(name, "champion", registry.publish(name, model, {"metrics": {"f1": 0.99}}))
    expected = evaluate.run(params.evaluate, model, data / "test.jsonl", tmp_path / "e.json", tmp_path / "p.jsonl", 16)
    rescored = champion_metrics(params, registry)
    timing = ("latency",)  # measured anew on each run
    assert {k: v for k, v in rescored.items() if k not in timing} == \
        {"version": 1, **{k: v for k, v in expected.items() if k not in timing}}  # scored now, not the recorded 0.99

    write_jsonl(data / "test.jsonl", [NerRecord("t:0", ("acme",), ("B-company",))])
    assert "B-company" in champion_metrics(params, registry)["incomparable"]


def test_concurrent_registrations_leave_a_consistent_champion(registry: Registry, model_dir: Path):
    def register(_):
        version = registry.publish("ner", model_dir, {})
        registry.set_alias("ner", "champion", version)
        return version

    with ThreadPoolExecutor(4) as pool:
        versions = sorted(pool.map(register, range(4)))
    assert versions == [1, 2, 3, 4]
    champion = registry.get_alias("ner", "champion")
    assert champion in versions  # a complete version, whichever registration wrote last
    assert registry.download("ner", champion, model_dir.parent / "champion").is_dir()
    assert registry.aliases("ner") == {"champion": champion}


def test_rollback_walks_back_through_the_alias_history(registry: Registry, model_dir: Path):
    for _ in range(3):
        registry.set_alias("ner", "champion", registry.publish("ner", model_dir, {}))
    registry.set_alias("ner", "champion", 3)  # re-pointing at the same version adds no history
    assert [registry.rollback("ner", "champion") for _ in range(2)] == [2, 1]
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("ner", "champion")
