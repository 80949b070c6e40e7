"""Model registry in S3-compatible object storage.

Layout under `s3://<bucket>/<prefix>/<name>/`:

    <version>/files/<path>   the model directory (weights, tokenizer, config, metrics, lineage)
    <version>/manifest.json  sha256 + size of every file and the version's metadata, written LAST
    _claims/<version>        create-only marker that reserves a version number
    aliases/<alias>.json     {"version": N, "history": [...]}: a movable pointer such as `champion`;
                             `history` lists the versions it pointed at before, so rollback can undo

A version exists only once its manifest does, and the manifest is written only after every file was
uploaded and verified, so readers never see a half-registered model. Version numbers are reserved
with create-only writes (`IfNoneMatch="*"`), so two concurrent registrations get distinct numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_ALIAS_HISTORY = 50


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the bucket/key and what was expected."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or ".." in name:
        raise RegistryError(f"invalid model name {name!r}: expected lowercase [a-z0-9._-], 1-64 chars, no '..'")
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias):
        raise RegistryError(f"invalid alias {alias!r}: expected lowercase [a-z0-9_-], starting with a letter")
    return alias


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_precondition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def split_ref(ref: str, default_alias: str = "champion") -> tuple[str, str]:
    """`NAME`, `NAME@VERSION`, `NAME@ALIAS` or `NAME:ALIAS` -> (name, version number or alias)."""
    for separator in ("@", ":"):
        if separator in ref:
            name, _, target = ref.partition(separator)
            if not target:
                raise RegistryError(f"model reference {ref!r}: nothing after {separator!r}")
            return check_name(name), target
    return check_name(ref), default_alias


@dataclass
class Registry:
    client: object  # a boto3 S3 client
    bucket: str
    prefix: str = "models"

    def _key(self, name: str, *parts: str) -> str:
        return "/".join([self.prefix.strip("/"), check_name(name), *parts])

    def versions(self, name: str) -> list[int]:
        """Published (complete) versions of a model, ascending."""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(name) + "/", Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                label = entry["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if label.isdigit() and self._exists(self._key(name, label, "manifest.json")):
                    found.append(int(label))
        return sorted(found)

    def publish(self, name: str, model_dir: Path, metadata: dict) -> int:
        """Upload a model directory as a new immutable version; returns its number."""
        model_dir = Path(model_dir)
        files = sorted(p for p in model_dir.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"{model_dir}: no files to register")
        version = self._claim_version(name)
        manifest_files = {}
        for path in files:
            relative = path.relative_to(model_dir).as_posix()
            manifest_files[relative] = self._upload_verified(path, self._key(name, str(version), "files", relative))
        manifest = {"name": name, "version": version, "files": manifest_files, "metadata": metadata}
        self._put_create_only(self._key(name, str(version), "manifest.json"), json.dumps(manifest, indent=2).encode())
        return version

    def manifest(self, name: str, version: int) -> dict:
        key = self._key(name, str(int(version)), "manifest.json")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise RegistryError(f"s3://{self.bucket}/{key}: version {version} of {name!r} not found ({exc})") from None
        return json.loads(body)

    def download(self, name: str, version: int, dest: Path) -> Path:
        """Fetch a version's files into `dest`, verifying each file's sha256 against the manifest."""
        manifest = self.manifest(name, version)
        dest = Path(dest)
        for relative, expected in manifest["files"].items():
            target = (dest / relative).resolve()
            if dest.resolve() not in target.parents:
                raise RegistryError(f"manifest of {name} v{version} has an unsafe path {relative!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, self._key(name, str(version), "files", relative), str(target))
            if sha256_of(target) != expected["sha256"]:
                target.unlink()
                raise RegistryError(f"{name} v{version}: checksum mismatch for {relative}")
        return dest

    def resolve(self, ref: str) -> tuple[str, int]:
        """(name, version) of a reference such as `wnut16-ner`, `wnut16-ner@3` or `wnut16-ner:champion`."""
        name, target = split_ref(ref)
        if target.isdigit():
            if int(target) not in self.versions(name):
                raise RegistryError(f"{name} has no published version {target} (versions: {self.versions(name)})")
            return name, int(target)
        version = self.get_alias(name, target)
        if version is None:
            raise RegistryError(f"model {name!r} has no alias {target!r} (aliases: {sorted(self.aliases(name))})")
        return name, version

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at a published version, remembering where it pointed before."""
        if version not in self.versions(name):
            raise RegistryError(f"cannot point alias {alias!r} at {name} v{version}: no such published version")
        current = self._read_alias(name, alias)
        history = current["history"] if current else []
        if current and current["version"] != version:
            history = [*history, current["version"]][-MAX_ALIAS_HISTORY:]
        self._write_alias(name, alias, {"version": int(version), "history": history})

    def rollback(self, name: str, alias: str) -> int:
        """Point `alias` back at the version it held before its last move; returns that version."""
        current = self._read_alias(name, alias)
        if not current or not current["history"]:
            raise RegistryError(f"{name}: alias {alias!r} has no earlier version to roll back to")
        *history, previous = current["history"]
        self._write_alias(name, alias, {"version": previous, "history": history})
        return previous

    def get_alias(self, name: str, alias: str) -> int | None:
        current = self._read_alias(name, alias)
        return None if current is None else int(current["version"])

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of a model and the version it points at."""
        prefix = self._key(name, "aliases") + "/"
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        names = [o["Key"][len(prefix):].removesuffix(".json") for o in response.get("Contents", [])]
        return {alias: self.get_alias(name, alias) for alias in sorted(names) if ALIAS_PATTERN.match(alias)}

    def models(self) -> list[str]:
        """Names of the models that have at least a claimed version."""
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix.strip("/") + "/", Delimiter="/")
        labels = [e["Prefix"].rstrip("/").rsplit("/", 1)[-1] for e in response.get("CommonPrefixes", [])]
        return sorted(label for label in labels if NAME_PATTERN.match(label))

    def _read_alias(self, name: str, alias: str) -> dict | None:
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        pointer = json.loads(body)
        return {"version": int(pointer["version"]), "history": [int(v) for v in pointer.get("history", [])]}

    def _write_alias(self, name: str, alias: str, pointer: dict) -> None:
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(pointer).encode())

    def _claim_version(self, name: str) -> int:
        """Reserve the next free version number with a create-only write; retry past races."""
        candidate = max(self._claimed(name), default=0) + 1
        for _ in range(100):
            try:
                self._put_create_only(self._key(name, "_claims", str(candidate)), b"")
                return candidate
            except RegistryError:
                candidate += 1
        raise RegistryError(f"could not reserve a version for {name!r} after 100 attempts")

    def _claimed(self, name: str) -> list[int]:
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(name, "_claims") + "/")
        leaves = [o["Key"].rsplit("/", 1)[-1] for o in response.get("Contents", [])]
        return [int(leaf) for leaf in leaves if leaf.isdigit()]

    def _put_create_only(self, key: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if _is_precondition_failure(exc):
                raise RegistryError(f"s3://{self.bucket}/{key} already exists") from None
            raise

    def _upload_verified(self, path: Path, key: str) -> dict:
        """Upload one file in a single PUT and check the stored size and MD5 ETag."""
        data = path.read_bytes()
        response = self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        md5 = hashlib.md5(data).hexdigest()
        if response.get("ETag", "").strip('"') not in {md5, ""}:
            etag = response.get("ETag")
            raise RegistryError(f"s3://{self.bucket}/{key}: upload corrupted (ETag {etag} != md5 {md5})")
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError:
            return False
