"""Model registry in S3-compatible object storage.

Layout under `s3://<bucket>/<prefix>/<name>/`:

    <version>/files/<path>   the model directory (weights, tokenizer, config, metrics, lineage)
    <version>/manifest.json  sha256 + size of every file and the version's metadata, written LAST
    _claims/<version>        create-only marker that reserves a version number; its body names the
                             content digest and flow run that reserved it
    aliases/<alias>.json     {"version": N, "history": [...]}: a movable pointer such as `champion`;
                             `history` lists the versions it pointed at before, so rollback can undo

A version exists only once its manifest does, and the manifest is written only after every file was
uploaded and verified, so readers never see a half-registered model. Version numbers are reserved
with create-only writes (`IfNoneMatch="*"`), so two concurrent registrations get distinct numbers.

A version is identified by the content digest of its model files (`model_digest`): publishing weights
that an existing version already holds returns that version instead of a new one, and a retried
publish of the same flow run finishes the version it had claimed. Aliases move by compare-and-swap
(`IfMatch` on the alias object's ETag), so a concurrent move is detected instead of overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from botocore.exceptions import ClientError

from tasks.io import swap_in_folder
from tasks.names import ALIAS_PATTERN, NAME_PATTERN, alias_problem, model_name_problem

# Used with fullmatch only: `$` also matches before a final "\n", so match() would let "champion\n"
# through, and a name or alias becomes an S3 key.
MAX_ALIAS_HISTORY = 50
ANY = object()  # set_alias/rollback `expected`: whatever the alias points at when it is read
# Written anew by each registration (metrics, lineage with a timestamp, model card, the drift monitor's
# reference profile of the test split): not part of a model's identity, so they are left out of its digest.
METADATA_FILES = frozenset({"eval.json", "lineage.json", "README.md", "reference.json"})
# Compressed variants of the model (tasks/variants.py), published inside its version: derived from the
# weights, so not part of the digest either (a no-op run finds its version whatever its variants).
VARIANTS_FOLDER = "variants"
# Written by `download` into each folder it fills: re-pulling may replace a folder that holds it, while a
# folder without it (a checkout, `--dest .`) is the user's and is never replaced unless forced.
PULL_MARKER = ".flowtune-pull.json"


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the bucket/key and what was expected."""


class AliasConflict(RegistryError):
    """An alias moved between the moment it was read and the moment it was to be written."""


def model_digest(file_hashes: dict[str, str]) -> str:
    """The content digest of a model from its files' sha256 (relative POSIX path -> hex digest).

    Invariant: the same weights, tokenizer and config give the same digest whichever run registered
    them; the per-registration METADATA_FILES and the variants do not count.
    """
    lines = sorted(f"{path}\t{sha}" for path, sha in file_hashes.items()
                   if path not in METADATA_FILES and not path.startswith(VARIANTS_FOLDER + "/"))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def directory_digest(model_dir: Path) -> str:
    """`model_digest` of a model folder on disk."""
    model_dir = Path(model_dir)
    return model_digest({p.relative_to(model_dir).as_posix(): sha256_of(p) for p in model_files(model_dir)})


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model folder, sorted, without a pull's marker (a pulled model republished is the same)."""
    return sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and p.name != PULL_MARKER)


def manifest_digest(manifest: dict) -> str:
    """The digest a manifest records, or the one its file checksums give (versions published before
    digests were recorded)."""
    return manifest.get("digest") or model_digest({path: f["sha256"] for path, f in manifest["files"].items()})


def refuse_foreign_folder(dest: Path, force: bool) -> None:
    """A download replaces `dest` whole: refuse a file, or a non-empty folder that holds no PULL_MARKER
    (someone's own files), unless `force`."""
    if dest.exists() and not dest.is_dir():
        raise RegistryError(f"{dest} exists and is not a folder")
    if force or not dest.is_dir() or (dest / PULL_MARKER).is_file() or not any(dest.iterdir()):
        return
    raise RegistryError(f"{dest} is a non-empty folder that no earlier pull created (no {PULL_MARKER}); pulling "
                        "would replace all its files: pick another --dest, or pass --force to replace it")


def variants_in(manifest: dict) -> list[str]:
    """The compressed variants a version holds (`variants/<name>/...` files)."""
    return sorted({path.split("/")[1] for path in manifest["files"]
                   if path.startswith(VARIANTS_FOLDER + "/") and path.count("/") >= 2})


def variant_files(manifest: dict, variant: str, what: str) -> dict[str, str]:
    """Manifest path -> sha256 of one variant's files; RegistryError naming the variants there are."""
    files = {path: f["sha256"] for path, f in manifest["files"].items() if path.startswith(_prefix(variant))}
    if not files:
        there = variants_in(manifest)
        raise RegistryError(f"{what} has no variant {variant!r} (variants: {', '.join(there) or 'none'}; the "
                            "compress stage publishes those that pass its thresholds)")
    return files


def local_variant(model_dir: Path, variant: str | None) -> Path:
    """A registered version's folder on disk (`registry pull`), or one of its variants' folders in it."""
    if variant is None:
        return Path(model_dir)
    folder = Path(model_dir) / VARIANTS_FOLDER / variant
    if not folder.is_dir():
        there = sorted(p.name for p in (Path(model_dir) / VARIANTS_FOLDER).glob("*") if p.is_dir())
        raise RegistryError(f"{model_dir} has no variant {variant!r} (variants: {', '.join(there) or 'none'})")
    return folder


def _prefix(variant: str | None) -> str:
    """What a file's manifest path starts with in `variant` (None: the version itself, every file)."""
    return "" if variant is None else f"{VARIANTS_FOLDER}/{variant}/"


def check_name(name: str) -> str:
    if problem := model_name_problem(name):
        raise RegistryError(problem)
    return name


def check_alias(alias: str) -> str:
    if problem := alias_problem(alias):
        raise RegistryError(problem)
    return alias


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_precondition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def _label(version: int | None | object) -> str:
    return "no version" if version is None else f"v{version}"


def split_ref(ref: str, default_alias: str = "champion") -> tuple[str, str]:
    """`NAME`, `NAME@VERSION`, `NAME@ALIAS` or `NAME:ALIAS` -> (name, version number or alias)."""
    for separator in ("@", ":"):
        if separator in ref:
            name, _, target = ref.partition(separator)
            if not target:
                raise RegistryError(f"model reference {ref!r}: nothing after {separator!r}")
            return check_name(name), target
    return check_name(ref), default_alias


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


@dataclass
class Inventory:
    """One model's objects in the registry by role, from one listing: what gc needs to plan deletions without
    knowing the layout above (which stays in this module)."""

    name: str
    claims: dict[int, StoredObject] = field(default_factory=dict)
    manifests: dict[int, StoredObject] = field(default_factory=dict)
    files: dict[int, list[StoredObject]] = field(default_factory=dict)
    pointers: dict[str, dict] = field(default_factory=dict)  # alias -> {"version": N, "history": [...]}

    def version_keys(self, number: int, keep_claim: bool) -> tuple[str, ...]:
        """A version's keys in deletion order: manifest first (readers stop seeing it), files, then claim."""
        keys = [self.manifests[number].key] if number in self.manifests else []
        keys += [o.key for o in self.files.get(number, [])]
        if number in self.claims and not keep_claim:
            keys.append(self.claims[number].key)
        return tuple(keys)

    def version_size(self, number: int) -> int:
        objects = [self.manifests.get(number), self.claims.get(number), *self.files.get(number, [])]
        return sum(o.size for o in objects if o is not None)


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

    def publish(self, name: str, model_dir: Path, metadata: dict, run_id: str | None = None) -> int:
        """Upload a model directory as a new immutable version; returns its number.

        Idempotent: when a published version already holds these model files (same `directory_digest`),
        that version is returned and nothing is uploaded. A retry by the same `run_id` after a partial
        failure reuses the version number it had claimed, so a retried registration never makes N+1.
        """
        model_dir = Path(model_dir)
        files = model_files(model_dir)
        if not files:
            raise RegistryError(f"{model_dir}: no files to register")
        digest = directory_digest(model_dir)
        existing = self.find_digest(name, digest)
        if existing is not None:
            return existing
        version = self._claim_version(name, digest, run_id)
        manifest_files = {}
        for path in files:
            relative = path.relative_to(model_dir).as_posix()
            manifest_files[relative] = self._upload_verified(path, self._key(name, str(version), "files", relative))
        manifest = {"name": name, "version": version, "digest": digest, "files": manifest_files, "metadata": metadata}
        manifest_key = self._key(name, str(version), "manifest.json")
        try:
            self._put_create_only(manifest_key, json.dumps(manifest, indent=2).encode())
        except RegistryError:
            # The manifest is there already: our own earlier attempt wrote it and the reply was lost.
            if manifest_digest(self.manifest(name, version)) != digest:
                raise
        return version

    def find_digest(self, name: str, digest: str) -> int | None:
        """The newest published version whose model files have this digest, or None."""
        for version in reversed(self.versions(name)):
            if manifest_digest(self.manifest(name, version)) == digest:
                return version
        return None

    def manifest(self, name: str, version: int) -> dict:
        key = self._key(name, str(int(version)), "manifest.json")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey"}:
                raise  # storage trouble (5xx, throttling, refused keys) is not "not found"
            raise RegistryError(f"s3://{self.bucket}/{key}: version {version} of {name!r} not found ({exc})") from None
        return json.loads(body)

    def download(self, name: str, version: int, dest: Path, variant: str | None = None,
                 with_variants: bool = True, force: bool = False) -> Path:
        """Fetch a version's files into `dest`, verifying each file's sha256 against the manifest: all of them,
        only the model's (not `with_variants`), or only those of one of its compressed variants (`variant`).

        The files land in a staging folder next to `dest`, which then replaces `dest` whole: a failed or
        interrupted download leaves `dest` as it was, and a folder never mixes two versions' files. A
        non-empty `dest` that no earlier download filled (no PULL_MARKER) is refused unless `force`.
        """
        dest = Path(dest).absolute()
        refuse_foreign_folder(dest, force)
        manifest = self.manifest(name, version)
        files = {path: f["sha256"] for path, f in manifest["files"].items()
                 if with_variants or not path.startswith(VARIANTS_FOLDER + "/")}
        if variant is not None:
            files = variant_files(manifest, variant, f"{name} v{version}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
        try:
            for stored, sha256 in files.items():
                self._download_file(name, version, stored, sha256, staged, stored.removeprefix(_prefix(variant)))
            marker = {"name": name, "version": int(version), "variant": variant}
            (staged / PULL_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
            swap_in_folder(staged, dest)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return dest

    def _download_file(self, name: str, version: int, stored: str, sha256: str, folder: Path, relative: str) -> None:
        """The version's file `stored` (its manifest path) into `folder` as `relative`."""
        target = (folder / relative).resolve()
        if folder.resolve() not in target.parents:
            raise RegistryError(f"manifest of {name} v{version} has an unsafe path {stored!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(name, str(version), "files", stored), str(target))
        if sha256_of(target) != sha256:
            raise RegistryError(f"{name} v{version}: checksum mismatch for {stored}")

    def resolve(self, ref: str) -> tuple[str, int]:
        """(name, version) of a reference such as `wnut16-ner`, `wnut16-ner@3` or `wnut16-ner:champion`."""
        name, target = split_ref(ref)
        if not self.versions(name):
            raise RegistryError(f"no model named {name!r} in the registry (models: {self.models()})")
        if target.isdigit():
            if int(target) not in self.versions(name):
                raise RegistryError(f"{name} has no published version {target} (versions: {self.versions(name)})")
            return name, int(target)
        version = self.get_alias(name, target)
        if version is None:
            raise RegistryError(f"model {name!r} has no alias {target!r} (aliases: {sorted(self.aliases(name))})")
        return name, version

    def set_alias(self, name: str, alias: str, version: int, expected: int | None | object = ANY) -> None:
        """Point `alias` at a published version, remembering where it pointed before.

        Compare-and-swap: with `expected` (the version the caller saw at the alias, None for no alias),
        the move happens only if the alias still points there; and the write itself succeeds only if
        nobody moved the alias since it was read here. Otherwise AliasConflict names both versions.
        Moving an alias to where it already points changes nothing (a retried move succeeds).
        """
        if version not in self.versions(name):
            raise RegistryError(f"cannot point alias {alias!r} at {name} v{version}: no such published version")
        current, etag = self._read_alias(name, alias)
        now = current["version"] if current else None
        if now == version:
            return
        if expected is not ANY and now != expected:
            raise AliasConflict(f"{name}: alias {alias!r} points at {_label(now)}, not {_label(expected)} as seen "
                                f"when this move to v{version} was decided (another run or `registry promote` "
                                "moved it); re-run to decide against the current one")
        history = current["history"] if current else []
        if now is not None:
            history = [*history, now][-MAX_ALIAS_HISTORY:]
        self._write_alias(name, alias, {"version": int(version), "history": history}, etag, f"move to v{version}")

    def rollback(self, name: str, alias: str, expected: int | None | object = ANY) -> int:
        """Point `alias` back at the version it held before its last move; returns that version.

        Compare-and-swap like `set_alias`: with `expected`, only if the alias still points there.
        """
        current, etag = self._read_alias(name, alias)
        if not current or not current["history"]:
            raise RegistryError(f"{name}: alias {alias!r} has no earlier version to roll back to")
        if expected is not ANY and current["version"] != expected:
            raise AliasConflict(f"{name}: alias {alias!r} points at v{current['version']}, not {_label(expected)}: "
                                "it moved since you looked; check `flowtune registry list` and re-run")
        published = set(self.versions(name))
        history = list(current["history"])
        while history and history[-1] not in published:  # deleted by `flowtune gc` retention
            history.pop()
        if not history:
            raise RegistryError(f"{name}: alias {alias!r} has no earlier version left to roll back to (the versions "
                                f"it held before, {current['history']}, were deleted)")
        previous = history.pop()
        self._write_alias(name, alias, {"version": previous, "history": history}, etag, f"roll back to v{previous}")
        return previous

    def get_alias(self, name: str, alias: str) -> int | None:
        current, _ = self._read_alias(name, alias)
        return None if current is None else int(current["version"])

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of a model and the version it points at."""
        prefix = self._key(name, "aliases") + "/"
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        names = [o["Key"][len(prefix):].removesuffix(".json") for o in response.get("Contents", [])]
        return {alias: self.get_alias(name, alias) for alias in sorted(names) if ALIAS_PATTERN.fullmatch(alias)}

    def version_url(self, name: str, version: int) -> str:
        """Where a version's objects live, for messages: `s3://<bucket>/<prefix>/<name>/<version>/`."""
        return f"s3://{self.bucket}/{self._key(name, str(int(version)))}/"

    def inventory(self, name: str) -> Inventory:
        """Every object of `name` sorted into claims, manifests, files and alias pointers (one paginated listing,
        plus one read per alias)."""
        base = self._key(name) + "/"
        found = Inventory(name)
        for obj in self._list(base):
            parts = obj.key[len(base):].split("/")
            if parts[0] == "_claims" and len(parts) == 2 and parts[1].isdigit():
                found.claims[int(parts[1])] = obj
            elif parts[0].isdigit() and parts[1:] == ["manifest.json"]:
                found.manifests[int(parts[0])] = obj
            elif parts[0].isdigit():
                found.files.setdefault(int(parts[0]), []).append(obj)
            elif parts[0] == "aliases" and len(parts) == 2 and parts[1].endswith(".json"):
                found.pointers[parts[1].removesuffix(".json")] = self._read_json(obj.key)
        return found

    def alias_pointers(self, name: str) -> dict[str, dict]:
        """Only the alias pointers of `name` (a small listing, for re-checks just before a deletion)."""
        base = self._key(name, "aliases") + "/"
        return {obj.key[len(base):].removesuffix(".json"): self._read_json(obj.key) for obj in self._list(base)
                if "/" not in obj.key[len(base):] and obj.key.endswith(".json")}

    def _list(self, prefix: str) -> list[StoredObject]:
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(StoredObject(o["Key"], o["Size"], o["LastModified"]) for o in page.get("Contents", []))
        return found

    def _read_json(self, key: str) -> dict:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def models(self) -> list[str]:
        """Names of the models that have at least a claimed version."""
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix.strip("/") + "/", Delimiter="/")
        labels = [e["Prefix"].rstrip("/").rsplit("/", 1)[-1] for e in response.get("CommonPrefixes", [])]
        return sorted(label for label in labels if NAME_PATTERN.fullmatch(label))

    def _read_alias(self, name: str, alias: str) -> tuple[dict | None, str | None]:
        """The alias pointer and its ETag (the token a compare-and-swap write must match); (None, None)."""
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None, None
            raise
        pointer = json.loads(response["Body"].read())
        return ({"version": int(pointer["version"]), "history": [int(v) for v in pointer.get("history", [])]},
                response["ETag"])

    def _write_alias(self, name: str, alias: str, pointer: dict, etag: str | None, what: str) -> None:
        """Write the pointer only if the alias object is still the one read (ETag `etag`), or still absent."""
        key = self._key(name, "aliases", f"{check_alias(alias)}.json")
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(pointer).encode(), **condition)
        except ClientError as exc:
            if not _is_precondition_failure(exc):
                raise
            now = self.get_alias(name, alias)
            raise AliasConflict(f"{name}: alias {alias!r} moved to {_label(now)} while this {what} was being "
                                "written; nothing was changed, re-run to decide against the current one") from None

    def _claim_version(self, name: str, digest: str = "", run_id: str | None = None) -> int:
        """Reserve a version number with a create-only write; retry past races.

        A claim records the digest and flow run it was made for: the same run publishing the same
        weights again (a retry after a partial failure) gets its own unfinished claim back.
        """
        claims = self._claimed(name)
        if run_id:
            for version in sorted(claims, reverse=True):
                if self._claim_owner(name, version) == {"digest": digest, "flow_run": run_id} \
                        and not self._exists(self._key(name, str(version), "manifest.json")):
                    return version
        candidate = max(claims, default=0) + 1
        body = json.dumps({"digest": digest, "flow_run": run_id}).encode()
        for _ in range(100):
            try:
                self._put_create_only(self._key(name, "_claims", str(candidate)), body)
                return candidate
            except RegistryError:
                candidate += 1
        raise RegistryError(f"could not reserve a version for {name!r} after 100 attempts")

    def _claim_owner(self, name: str, version: int) -> dict | None:
        try:
            key = self._key(name, "_claims", str(version))
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return json.loads(body) if body else None
        except (ClientError, ValueError):
            return None

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

