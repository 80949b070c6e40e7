"""`registry pull --dest` never replaces a folder of the user's own (review N3: `--dest .` wiped the checkout).

The registry runs on an in-memory stand-in for the two S3 calls a download makes (the manifest and each
file); tests/integration/test_registry.py covers the same code against SeaweedFS.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import pytest

from flows.cli.registry import add_registry_parser, cmd_pull
from flows.registry import PULL_MARKER, Registry, RegistryError, directory_digest

FILES = {"config.json": b'{"model_type": "bert"}', "sub/weights.bin": b"\x00\x01" * 50}


class MemoryS3:
    """get_object and download_file over a dict of keys: what `Registry.download` uses."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 (boto3's argument names)
        return {"Body": io.BytesIO(self.objects[Key])}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        Path(filename).write_bytes(self.objects[key])


@pytest.fixture
def registry() -> Registry:
    manifest = {"name": "ner", "version": 1, "metadata": {},
                "files": {path: {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
                          for path, body in FILES.items()}}
    objects = {f"models/ner/1/files/{path}": body for path, body in FILES.items()}
    objects["models/ner/1/manifest.json"] = json.dumps(manifest).encode()
    return Registry(MemoryS3(objects), "bucket", "models")


def own_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "checkout"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.py").write_text("print('mine')\n")
    (folder / "notes.txt").write_text("keep me\n")
    return folder


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_non_empty_folder_no_pull_created_is_refused_by_name_and_left_intact(registry: Registry, tmp_path: Path):
    folder = own_folder(tmp_path)
    before = files_in(folder)
    with pytest.raises(RegistryError) as caught:
        registry.download("ner", 1, folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "--force" in message
    assert files_in(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout"]  # no staging folder left beside it


def test_a_folder_an_earlier_pull_created_is_replaced_whole(registry: Registry, tmp_path: Path):
    dest = registry.download("ner", 1, tmp_path / "model")
    assert json.loads((dest / PULL_MARKER).read_text()) == {"name": "ner", "version": 1, "variant": None}
    (dest / "stale.bin").write_bytes(b"from an older version")
    registry.download("ner", 1, dest)
    assert files_in(dest) == {**FILES, PULL_MARKER: (dest / PULL_MARKER).read_bytes()}


def test_an_empty_folder_is_filled_and_force_replaces_a_folder_of_ones_own(registry: Registry, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert (registry.download("ner", 1, tmp_path / "empty") / "config.json").read_bytes() == FILES["config.json"]
    folder = registry.download("ner", 1, own_folder(tmp_path), force=True)
    assert not (folder / "notes.txt").exists() and (folder / "sub" / "weights.bin").read_bytes() == FILES[
        "sub/weights.bin"]


def test_the_marker_is_not_part_of_the_model_digest(registry: Registry, tmp_path: Path):
    pulled = registry.download("ner", 1, tmp_path / "model")
    plain = tmp_path / "plain"
    for path, body in FILES.items():
        (plain / path).parent.mkdir(parents=True, exist_ok=True)
        (plain / path).write_bytes(body)
    assert directory_digest(pulled) == directory_digest(plain)  # a pulled model republished is the same version


def test_the_pull_command_refuses_without_force_and_replaces_with_it(registry: Registry, tmp_path: Path,
                                                                     monkeypatch, capsys):
    monkeypatch.setattr(Registry, "resolve", lambda self, ref: ("ner", 1))
    parser = argparse.ArgumentParser()
    add_registry_parser(parser.add_subparsers())
    folder = own_folder(tmp_path)
    with pytest.raises(RegistryError, match="--force"):
        cmd_pull(registry, parser.parse_args(["registry", "pull", "ner", "--dest", str(folder)]))
    assert (folder / "notes.txt").is_file()
    cmd_pull(registry, parser.parse_args(["registry", "pull", "ner", "--dest", str(folder), "--force"]))
    assert not (folder / "notes.txt").exists() and "ner v1 ->" in capsys.readouterr().out
