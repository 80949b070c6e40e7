"""`flowtune gc` on a real SeaweedFS: a dry run deletes nothing, `--apply` deletes exactly what the rules
say, aliased versions stay downloadable; and every bucket of the local S3 takes writes."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from flows.ops.gc import apply, history, stored
from flows.ops.gc.objects import Report
from flows.ops.services import weed_shell
from flows.registry import Registry
from tasks.params import GcParams
from tasks.settings import Settings, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the module starts services of its own (~35 s)

NAME = "gc-model"
# Injected "now": two days on, every S3 object is past keep_days (1) and grace (1 h). S3 LastModified
# cannot be backdated; local folders get their times set relative to this.
LATER = timedelta(days=2)
RULES = GcParams(keep_days=1, keep_versions=1, keep_version_days=0, alias_history=1, grace_hours=1,
                 prefect_keep_days=30, log_max_mb=50, log_keep=3, capture_keep_days=30)


def md5(label: str, directory: bool = False) -> str:
    return label.encode().hex().ljust(32, "0")[:32] + (".dir" if directory else "")


HASHES = {label: md5(label) for label in ("checkout", "v1", "v2", "entry", "run3", "ws-old", "ws-new", "unused",
                                           "recent-run-cache", "old-run-cache")}
HASHES["v3-dir"] = md5("v3dir", directory=True)


def lock(*labels: str) -> dict:
    return {"schema": "2.0", "stages": {"s": {"outs": [{"path": "data/x", "hash": "md5", "md5": HASHES[label]}
                                                       for label in labels]}}}


@pytest.fixture(scope="module")
def services(tmp_path_factory, start_local_services) -> Settings:
    """A private SeaweedFS (+ Prefect server) for this module: gc sweeps whole buckets."""
    from tests.helpers import discard_services

    workdir = tmp_path_factory.mktemp("gc-services")
    settings = start_local_services(workdir)
    yield settings.model_copy(update={"registry_prefix": f"gc-{uuid.uuid4().hex[:8]}"})
    discard_services(settings)


def test_every_bucket_takes_writes_and_the_volume_count_follows_the_disk(services: Settings):
    client = s3_client(services)
    for bucket in (services.dvc_bucket, services.registry_bucket, services.reports_bucket, "flowtune-extra"):
        if bucket == "flowtune-extra":
            client.create_bucket(Bucket=bucket)  # a fourth collection still gets volumes of its own
        client.put_object(Bucket=bucket, Key="probe/one", Body=b"x" * 1000)
        assert client.get_object(Bucket=bucket, Key="probe/one")["Body"].read() == b"x" * 1000
        client.delete_object(Bucket=bucket, Key="probe/one")
    volume_slots = int(re.search(r"hdd\(volume:\d+/(\d+)", weed_shell(services, "volume.list"))[1])
    assert volume_slots > 200  # -volume.max=0: free disk / 64 MiB, no longer a fixed 200


def deleted_bytes(settings: Settings, collection: str) -> int:
    """Bytes of deleted objects still on disk in `collection`'s volumes (freed only by a vacuum)."""
    rows = re.findall(r"Collection:([^,]*),.*?DeletedByteCount:(\d+)", weed_shell(settings, "volume.list"))
    return sum(int(count) for name, count in rows if name == collection)


def test_gc_compacts_volumes_over_grpc_so_deleted_objects_free_the_disk(services: Settings, capsys):
    """The master's HTTP admin API is off (no token on it); `apply.vacuum` compacts through `weed shell` over
    mutual-TLS gRPC instead, with the master's own garbage threshold."""
    client, bucket = s3_client(services), "flowtune-vacuum"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="big", Body=os.urandom(3_000_000))
    client.delete_object(Bucket=bucket, Key="big")
    # The master learns volume sizes from the volume server's heartbeats (every few seconds), and the filer
    # deletes an object's chunks in batches: both counts below are read until they settle.
    assert wait_for(lambda: deleted_bytes(services, bucket) >= 3_000_000)
    apply.vacuum(services)
    assert "SeaweedFS compacted its volumes with at least 0.1 garbage" in capsys.readouterr().out
    assert wait_for(lambda: deleted_bytes(services, bucket) == 0), deleted_bytes(services, bucket)


def wait_for(condition, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def model(tmp: Path, seed: int) -> Path:
    folder = tmp / f"model-{seed}"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(bytes([seed]) * 2000)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return folder


def set_times(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.fixture(scope="module")
def store(services: Settings, tmp_path_factory) -> dict:
    """Five versions (v1 staging, v5 champion with history [2, 3]), an orphan claim with files and a
    newer bare one, per-run Data Docs and run folders, two workspaces, DVC cache and remote objects."""
    tmp = tmp_path_factory.mktemp("gc-store")
    client = s3_client(services)
    registry = Registry(client, services.registry_bucket, services.registry_prefix)
    locks = {1: lock("v1"), 2: lock("v2"), 3: lock("v3-dir"), 4: lock("v2"), 5: lock("checkout")}
    for version in range(1, 6):
        metadata = {"flow_run": {"id": f"run-{version}"}, "dvc_lock": locks[version]}
        assert registry.publish(NAME, model(tmp, version), metadata) == version
        client.put_object(Bucket=services.reports_bucket, Key=f"model-cards/{NAME}/{version}.md", Body=b"# card")
    for version in (2, 3, 5):
        registry.set_alias(NAME, "champion", version)
    registry.set_alias(NAME, "staging", 1)
    client.put_object(Bucket=services.registry_bucket, Key=registry._key(NAME, "_claims", "6"), Body=b"")
    client.put_object(Bucket=services.registry_bucket, Key=registry._key(NAME, "6", "files", "w.bin"), Body=b"x" * 50)
    client.put_object(Bucket=services.registry_bucket, Key=registry._key(NAME, "_claims", "7"), Body=b"")
    for run in ("run-1", "run-2", "run-x"):
        client.put_object(Bucket=services.reports_bucket, Key=f"data-docs/{run}/raw/index.html", Body=b"<html/>")
    client.put_object(Bucket=services.dvc_bucket, Key="flowtune-runs/run-3/dvc.lock", Body=yaml.safe_dump(lock("run3")))
    client.put_object(Bucket=services.dvc_bucket, Key="flowtune-runs/run-y/dvc.lock", Body=yaml.safe_dump(lock("v2")))
    root = services.state_dir.parent  # the checkout `services up` ran in: its .dvc/config names the remote
    (root / "dvc.lock").write_text(yaml.safe_dump(lock("checkout")))
    now = datetime.now(UTC) + LATER
    for name, label, age in (("ws-old", "ws-old", timedelta(days=5)), ("ws-new", "ws-new", timedelta(hours=2))):
        folder = services.state_dir / "workspaces" / name
        folder.mkdir(parents=True)
        (folder / "dvc.lock").write_text(yaml.safe_dump(lock(label)))
        set_times(folder, now - age)
    write_dvc_objects(client, services, root, now)
    return {"registry": registry, "client": client, "root": root, "now": now, "tmp": tmp}


def write_dvc_objects(client, services: Settings, root: Path, now: datetime) -> None:
    """Every hash in the cache and the remote; v3's `.dir` listing (naming `entry`) in the remote only."""
    cache = root / ".dvc" / "cache" / "files" / "md5"
    listing = json.dumps([{"md5": HASHES["entry"], "relpath": "a.txt"}]).encode()
    for label, digest in HASHES.items():
        body = listing if label == "v3-dir" else label.encode()
        client.put_object(Bucket=services.dvc_bucket, Key=f"dvcstore/files/md5/{digest[:2]}/{digest[2:]}", Body=body)
        if label != "v3-dir":
            (cache / digest[:2]).mkdir(parents=True, exist_ok=True)
            (cache / digest[:2] / digest[2:]).write_bytes(body)
    runs = root / ".dvc" / "cache" / "runs" / "ab"
    for entry, label, age in (("old", "old-run-cache", timedelta(days=5)), ("recent", "recent-run-cache", timedelta())):
        path = runs / f"stage-{entry}" / entry
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump({"cmd": "x", "outs": [{"path": "o", "md5": HASHES[label]}]}))
        set_times(path, now - age)


def snapshot(services: Settings, root: Path) -> set[str]:
    """Every object key of the three buckets and every file under the DVC cache and workspaces."""
    client = s3_client(services)
    keys = {f"{b}/{o.key}" for b in (services.dvc_bucket, services.registry_bucket, services.reports_bucket)
            for o in stored.list_objects(client, b, "")}
    files = {str(p.relative_to(root)) for p in (root / ".dvc" / "cache").rglob("*") if p.is_file()}
    folders = {str(p.relative_to(root)) for p in (services.state_dir / "workspaces").iterdir()}
    return keys | files | folders


def expected(services: Settings, root: Path) -> set[tuple[str, str]]:
    prefix = f"s3://{services.registry_bucket}/{services.registry_prefix}/{NAME}"
    cache = root / ".dvc" / "cache" / "files" / "md5"
    dead = [HASHES[label] for label in ("v2", "ws-old", "unused", "old-run-cache")]
    return {("version", f"{prefix}/2/"), ("version", f"{prefix}/4/"), ("orphan-claim", f"{prefix}/6/"),
            ("model-card", f"s3://{services.reports_bucket}/model-cards/{NAME}/2.md"),
            ("model-card", f"s3://{services.reports_bucket}/model-cards/{NAME}/4.md"),
            ("data-docs", f"s3://{services.reports_bucket}/data-docs/run-2/"),
            ("data-docs", f"s3://{services.reports_bucket}/data-docs/run-x/"),
            ("run-folder", f"s3://{services.dvc_bucket}/flowtune-runs/run-y/"),
            ("workspace", str((services.state_dir / "workspaces" / "ws-old").resolve())),
            ("dvc-run-cache", str(root / ".dvc" / "cache" / "runs" / "ab" / "stage-old" / "old")),
            *{("dvc-cache", str(cache / h[:2] / h[2:])) for h in dead},
            *{("dvc-remote", f"s3://{services.dvc_bucket}/dvcstore/files/md5/{h[:2]}/{h[2:]}") for h in dead}}


def test_a_dry_run_lists_and_apply_deletes_exactly_what_the_rules_say(services: Settings, store: dict, capsys):
    root, now, registry = store["root"], store["now"], store["registry"]
    before = snapshot(services, root)
    dry = apply.run_gc(services, RULES, root, now=now)
    printed = capsys.readouterr().out
    assert snapshot(services, root) == before, "a dry run deleted something"
    assert {(d.kind, d.where) for d in dry.deletions} == expected(services, root)
    assert printed.count("would delete  ") == len(dry.deletions) and "in total" in printed
    # the manifest goes first: a reader stops seeing the version before its files disappear
    (v2,) = [d for d in dry.deletions if d.kind == "version" and d.where.endswith("/2/")]
    assert v2.keys[0].endswith("2/manifest.json") and v2.keys[-1].endswith("_claims/2")

    applied = apply.run_gc(services, RULES, root, now=now, apply=True)
    printed = capsys.readouterr().out
    assert not applied.failed and not applied.skipped
    assert printed.count("deleted       ") == len(expected(services, root))
    after = snapshot(services, root)
    gone = before - after
    assert all(gone_key.startswith((f"{services.registry_bucket}/", f"{services.reports_bucket}/",
                                    f"{services.dvc_bucket}/", ".dvc/", ".flowtune/")) for gone_key in gone)
    # v2, v4: manifest, 2 files, claim; claim 6 + its file; 2 cards, 2 Data Docs pages, 1 run folder lock,
    # 1 workspace, 1 run-cache entry; 4 objects in the DVC cache and the same 4 in the remote
    assert len(gone) == 2 * 4 + 2 + 2 + 2 + 1 + 1 + 1 + 2 * 4, sorted(gone)

    assert registry.versions(NAME) == [1, 3, 5]
    assert registry.aliases(NAME) == {"champion": 5, "staging": 1}
    for version in (1, 3, 5):  # aliased and rollback targets: still whole and verified
        registry.download(NAME, version, store["tmp"] / f"pulled-{version}")
    assert registry.rollback(NAME, "champion") == 3
    claims = {o.key.rsplit("/", 1)[-1] for o in stored.list_objects(store["client"], services.registry_bucket,
                                                                  registry._key(NAME, "_claims") + "/")}
    assert claims == {"1", "3", "5", "7"}  # 7 stays: the highest claim, so numbers are never reused
    assert apply.run_gc(services, RULES, root, now=now).deletions == []  # nothing left to collect


def test_old_flow_runs_go_through_the_prefect_api_with_their_artifacts(services: Settings):
    """gc.prefect_keep_days on the module's real Prefect server: a finished run past it is deleted with its
    artifact; a run a kept version names, and a run still going, stay."""
    from prefect import flow
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Completed, Running

    @flow(name="gc-probe")
    def probe() -> None:
        pass

    runs = history.PrefectRuns(services)
    with runs.client() as client:
        old, kept, running = (client.create_flow_run(probe, state=state).id
                              for state in (Completed(), Completed(), Running()))
        client.create_artifact(ArtifactCreate(flow_run_id=old, key="probe", type="markdown", data="# probe"))
    rules = RULES.model_copy(update={"prefect_keep_days": 1})
    deletions = history.plan_flow_runs(runs, {str(kept)}, rules, datetime.now(UTC) + LATER)
    assert str(old) in {d.where.rsplit("(", 1)[1].rstrip(")") for d in deletions}
    assert not {str(kept), str(running)} & {d.where.rsplit("(", 1)[1].rstrip(")") for d in deletions}
    report = Report(deletions, applied=True)
    for deletion in deletions:
        apply.apply_one(None, deletion, report)
    assert not report.failed
    with runs.client() as client:
        with pytest.raises(ObjectNotFound):
            client.read_flow_run(old)
        assert client.read_flow_run(kept).id == kept and client.read_flow_run(running).id == running
        query = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[old]))
        assert client.read_artifacts(artifact_filter=query) == []
