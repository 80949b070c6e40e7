"""Model registry in S3-compatible object storage.

Layout under `s3://<bucket>/<prefix>/<name>/`:

    <version>/files/<path>   the model directory (weights, tokenizer, config, metrics, lineage)
    <version>/manifest.json  sha256 + size of every file and the version's metadata, written LAST
    _claims/<version>        create-only marker that reserves a version number
    aliases/<alias>.json     {"version": N}: a movable pointer such as `champion`

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

    def set_alias(self, name: str, alias: str, version: int) -> None:
        if version not in self.versions(name):
            raise RegistryError(f"cannot point alias {alias!r} at {name} v{version}: no such published version")
        body = json.dumps({"version": int(version)}).encode()
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get_alias(self, name: str, alias: str) -> int | None:
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        return int(json.loads(body)["version"])

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
