"""`flowtune gc --apply` racing the writers of a live system, on a real SeaweedFS: a nightly run half-way
through registering a version (claimed, files uploading, no manifest yet) and through pushing its DVC
outputs (objects no dvc.lock names yet), a rollback onto a version gc planned to delete, and a promote in
the worst window, after gc removed the manifest of the version it names. Nothing referenced may go."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows.ops.gc import apply, plan
from flows.registry import Registry
from tasks.params import GcParams
from tasks.settings import s3_client
from tests.faults.test_registry_faults import model_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "ner"
# Real time (no injected "now"): what the racing writers just wrote is minutes old, inside `grace_hours`;
# versions have no age floor (`keep_version_days` 0), so v1 and v2 are beyond retention at once.
RULES = GcParams(keep_days=1, keep_versions=1, keep_version_days=0, alias_history=0, grace_hours=1,
                 prefect_keep_days=30, log_max_mb=50, log_keep=3, capture_keep_days=30)


class PausedPublish:
    """A nightly run's `registry.publish` in a thread, stopped after its first file until `resume()`."""

    def __init__(self, registry: Registry, model: Path):
        self.landed, self.go_on = threading.Event(), threading.Event()
        self.version: int | None = None
        real_put = registry.client.put_object

        def put_then_wait(**request):
            response = real_put(**request)
            if "/files/" in request["Key"] and not self.landed.is_set():
                self.landed.set()
                assert self.go_on.wait(120), "the test never resumed the publish"
            return response

        registry.client.put_object = put_then_wait
        self.thread = threading.Thread(target=self._publish, args=(registry, model), daemon=True)
        self.thread.start()
        assert self.landed.wait(60), "the publish never uploaded its first file"

    def _publish(self, registry: Registry, model: Path) -> None:
        self.version = registry.publish(NAME, model, {"run": "nightly"}, run_id="nightly-in-flight")

    def resume(self) -> int | None:
        self.go_on.set()
        self.thread.join(60)
        return self.version


def promote_after_the_plan(monkeypatch, promote) -> None:
    """`promote()` runs once gc has planned its deletions and before it deletes anything."""
    real_collect = plan.collect

    def plan_then_promote(*args, **kwargs):
        planned = real_collect(*args, **kwargs)
        promote()
        return planned

    monkeypatch.setattr(apply, "collect", plan_then_promote)


def promote_after_manifest_delete(monkeypatch, manifest_key: str, promote) -> list[str]:
    """gc's S3 client, with `promote()` run the moment gc has deleted `manifest_key`; what it raised, if anything
    (the other team's error, never gc's)."""
    real_client = apply.s3_client
    outcome: list[str] = []

    def client_with_race(settings):
        client = real_client(settings)
        real_delete = client.delete_object

        def delete_then_promote(**request):
            response = real_delete(**request)
            if request["Key"] == manifest_key and not outcome:
                try:
                    promote()
                    outcome.append("promoted")
                except Exception as exc:  # noqa: BLE001 - recorded for the test to check
                    outcome.append(f"refused: {exc}")
            return response

        client.delete_object = delete_then_promote
        return client

    monkeypatch.setattr(apply, "s3_client", client_with_race)
    return outcome


def unreferenced_dvc_object(settings, root: Path) -> tuple[Path, str]:
    """An output the in-flight run pushed (cache and remote) before its dvc.lock names it."""
    body = f"in-flight {uuid.uuid4()}".encode()
    digest = hashlib.md5(body).hexdigest()  # noqa: S324 - DVC's content address, not security
    cached = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(body)
    key = f"dvcstore/files/md5/{digest[:2]}/{digest[2:]}"
    s3_client(settings).put_object(Bucket=settings.dvc_bucket, Key=key, Body=body)
    return cached, key


def test_gc_during_a_publish_and_a_promote_deletes_nothing_referenced(private_s3, tmp_path, monkeypatch,
                                                                      reliability):
    settings = private_s3.model_copy(update={"registry_prefix": f"gc-race-{uuid.uuid4().hex[:8]}"})
    root = settings.state_dir.parent  # the checkout `services up` ran in (its .dvc/ holds the cache)
    registry = Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)
    for seed in (1, 2, 3):
        assert registry.publish(NAME, model_folder(tmp_path / f"v{seed}", seed, files=2), {}) == seed
    registry.set_alias(NAME, "champion", 3)
    cached, remote_key = unreferenced_dvc_object(settings, root)
    publish = PausedPublish(Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix),
                            model_folder(tmp_path / "v4", 4, files=3))

    other_team = Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)
    # Race 1: a rollback onto v1 lands after gc planned to delete v1, before it deletes anything.
    promote_after_the_plan(monkeypatch, lambda: other_team.set_alias(NAME, "champion", 1))
    # Race 2: a promote onto v2 in the worst window, once gc has deleted v2's manifest.
    race_2 = promote_after_manifest_delete(monkeypatch, registry._key(NAME, "2", "manifest.json"),
                                           lambda: other_team.set_alias(NAME, "champion", 2))
    started = time.monotonic()
    report = apply.run_gc(settings, RULES, root, apply=True)
    gc_s = time.monotonic() - started
    published = publish.resume()

    planned = {(d.kind, d.where.rstrip("/").rsplit("/", 1)[-1]) for d in report.deletions}
    assert {("version", "1"), ("version", "2")} <= planned, planned  # both were beyond retention
    assert not report.failed, report.failed
    assert any("an alias points at" in line and "v1" in line for line in report.skipped), report.skipped
    # The registry refuses an alias onto a version without a manifest: the promote fails in one clear line
    # (its user re-runs it against a version that exists), and the version it named was never referenced.
    assert race_2 and race_2[0].startswith("refused: ") and "no such published version" in race_2[0], race_2
    assert published == 4
    assert registry.versions(NAME) == [1, 3, 4]  # v2 gone; v1 kept back; the in-flight v4 finished whole
    assert registry.aliases(NAME) == {"champion": 1}
    for version in (1, 3, 4):
        registry.download(NAME, version, tmp_path / f"pulled-{version}")  # every checksum verified
    assert cached.is_file()
    s3_client(settings).head_object(Bucket=settings.dvc_bucket, Key=remote_key)
    reliability(fault="`flowtune gc --apply` while a nightly run registers a version and pushes its DVC outputs, "
                      "a rollback moves the champion onto a version gc planned to delete, and a promote names "
                      "another one just after gc removed its manifest",
                happened="gc kept v1 back (its re-check saw the new champion alias; one line) and deleted v2; the "
                         "promote onto v2 was refused in one line (no such published version); the in-flight "
                         "claim, its files and the unreferenced DVC objects stayed (younger than grace_hours) and "
                         "the paused publish then finished v4",
                recovered=True, lost="nothing referenced (versions [1, 3, 4], champion v1, checksums verified)",
                seconds_gc=round(gc_s, 1), planned_deletions=len(report.deletions))
