"""`flowtune gc`'s rules as pure functions: what stays and what goes, given lists and ages."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from flows.ops import services
from flows.ops.gc import apply, history, rules, stored
from flows.ops.gc.objects import Deletion, Obj, Report, human
from tasks.params import GcParams, load_params
from tests.helpers import ROOT

NOW = datetime(2027, 6, 1, 12, tzinfo=UTC)
RULES = GcParams(keep_days=14, keep_versions=2, keep_version_days=30, alias_history=1, grace_hours=1,
                 prefect_keep_days=30, log_max_mb=50, log_keep=3, capture_keep_days=30)
A, B, C, D = ("a" * 32, "b" * 32 + ".dir", "c" * 32, "d" * 32)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def test_the_rules_come_from_the_params_files_and_reject_unknown_keys():
    for name in ("params.yaml", "params-sentiment.yaml"):
        assert load_params(ROOT / name).gc.keep_versions >= 1
    with pytest.raises(ValueError, match="keep_dayz"):
        GcParams(**RULES.model_dump(), keep_dayz=3)
    with pytest.raises(ValueError, match="keep_versions"):  # never "keep none": the newest version always stays
        GcParams(**{**RULES.model_dump(), "keep_versions": 0})


def test_versions_beyond_the_policy_go_but_never_the_newest_the_young_or_the_aliased():
    published = {1: days_ago(200), 2: days_ago(100), 3: days_ago(90), 4: days_ago(60), 5: days_ago(20), 6: days_ago(1)}
    pointers = {"champion": {"version": 2, "history": [1, 3]}, "staging": {"version": 4, "history": []}}
    pinned = rules.pinned_versions(pointers, RULES.alias_history)
    assert pinned == {2, 3, 4}  # targets, and the last history entry (rollback goes to v3 first)
    # v6 and v5: newest two, and v5 is younger than 30 days; v2, v3, v4: aliased; v1: nothing keeps it
    assert rules.select_versions(published, pinned, RULES, NOW) == [1]
    assert rules.select_versions(published, set(), RULES, NOW) == [1, 2, 3, 4]


def test_alias_history_depth_zero_keeps_only_the_targets_and_a_long_history_its_tail():
    pointers = {"champion": {"version": 9, "history": [1, 2, 3, 4]}}
    assert rules.pinned_versions(pointers, 0) == {9}
    assert rules.pinned_versions(pointers, 2) == {9, 3, 4}
    assert rules.pinned_versions(pointers, 10) == {9, 1, 2, 3, 4}


def test_a_single_version_is_never_deleted_however_old():
    assert rules.select_versions({1: days_ago(1000)}, set(), RULES, NOW) == []


def test_orphan_claims_go_after_the_grace_period_with_their_files():
    claims = {1: days_ago(5), 2: days_ago(5), 3: NOW - timedelta(minutes=10), 4: days_ago(3)}
    files = {2: days_ago(4), 4: NOW - timedelta(minutes=5), 7: days_ago(2)}  # v7: files whose claim is gone
    # v1 is published; v3 and v4 may be a registration in progress (newest object inside the grace)
    assert rules.select_orphans(claims, files, {1}, NOW, timedelta(hours=1)) == [2, 7]


def test_runs_past_keep_days_go_unless_they_made_a_kept_version():
    runs = {"old": days_ago(15), "old-but-registered": days_ago(40), "new": days_ago(2)}
    assert rules.select_runs(runs, {"old-but-registered"}, NOW, 14) == ["old"]


def test_lock_hashes_finds_every_md5_of_a_lock_a_dvc_file_and_a_run_cache_entry():
    lock = {"schema": "2.0", "stages": {"ingest": {"deps": [{"path": "tasks/ingest.py", "md5": A}],
                                                   "outs": [{"path": "data/raw", "hash": "md5", "md5": B}]}}}
    dvc_file = {"outs": [{"md5": C, "path": "x"}]}
    assert rules.lock_hashes(lock) == {A, B}
    assert rules.lock_hashes(dvc_file) == {C}
    assert rules.lock_hashes({"md5": "not-a-hash", "outs": None}) == set()


def test_used_hashes_opens_directory_objects():
    listings = {B: [{"md5": C, "relpath": "train.jsonl"}, {"md5": D, "relpath": "dev.jsonl"}]}
    assert rules.used_hashes([{"outs": [{"md5": B}]}, {"md5": A}], listings.get) == {A, B, C, D}
    # an unreadable listing keeps the .dir object itself only
    assert rules.used_hashes([{"outs": [{"md5": B}]}], lambda digest: None) == {B}


def test_unused_objects_go_only_after_the_grace_period():
    objects = {A: Obj("k/a", 10, days_ago(3)), C: Obj("k/c", 10, days_ago(3)),
               D: Obj("k/d", 10, NOW - timedelta(minutes=30))}
    assert rules.select_objects(objects, {A}, NOW, timedelta(hours=1)) == [C]  # D: a stage may be writing it


def test_cache_objects_reads_the_dvc3_layout(tmp_path: Path):
    shard = tmp_path / "files" / "md5" / "aa"
    shard.mkdir(parents=True)
    (shard / ("a" * 30)).write_bytes(b"12345")
    (shard / "not-a-hash").write_bytes(b"x")
    (tmp_path / "files" / "md5" / "aa" / ("a" * 30 + ".tmp")).write_bytes(b"x")
    found = stored.cache_objects(tmp_path / "files" / "md5")
    assert list(found) == [A] and found[A].size == 5


def test_failed_workspaces_past_keep_days_go_with_their_size(tmp_path: Path):
    for name, age in (("run-old", 20), ("run-new", 1)):
        folder = tmp_path / name
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "f.bin").write_bytes(b"x" * 100)
        stamp = (datetime.now(UTC) - timedelta(days=age)).timestamp()
        os.utime(folder, (stamp, stamp))
    deletions, kept = stored.plan_workspaces(tmp_path, RULES, datetime.now(UTC))
    assert [(d.kind, Path(d.where).name, d.size) for d in deletions] == [("workspace", "run-old", 100)]
    assert kept == [tmp_path / "run-new"]
    assert stored.plan_workspaces(tmp_path / "none", RULES, NOW) == ([], [])


def test_checkout_records_read_dvc_lock_and_dvc_files_but_not_hidden_folders(tmp_path: Path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"s": {"outs": [{"md5": A}]}}}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.dvc").write_text(yaml.safe_dump({"outs": [{"md5": C}]}))
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "y.dvc").write_text(yaml.safe_dump({"outs": [{"md5": D}]}))
    assert rules.used_hashes(stored.checkout_records(tmp_path), lambda digest: None) == {A, C}


def test_lineage_gives_the_runs_and_locks_of_kept_versions():
    manifests = [{"metadata": {"flow_run": {"id": "r1"}, "dvc_lock": {"stages": {}}}},
                 {"metadata": {"flow_run": {"id": None}, "dvc_lock": "stages: {}\n"}}, {"metadata": {}}]
    assert stored.lineage_runs(manifests) == {"r1"}
    assert stored.lineage_locks(manifests) == [{"stages": {}}, {"stages": {}}]


def test_folders_group_by_run_id():
    objects = [Obj("data-docs/r1/raw/index.html", 5, days_ago(1)), Obj("data-docs/r1/clean/x", 7, days_ago(2)),
               Obj("data-docs/r2/raw/index.html", 1, days_ago(3)), Obj("data-docs/stray", 1, days_ago(3))]
    groups = stored.group_by_folder(objects, "data-docs/")
    assert {run: stored.newest(objs) for run, objs in groups.items()} == {"r1": days_ago(1), "r2": days_ago(3)}


def test_report_totals_by_kind_and_human_sizes():
    report = Report([Deletion("version", "v1", 3 << 20, "r"), Deletion("version", "v2", 1 << 20, "r"),
                        Deletion("workspace", "w", 512, "r")], applied=False)
    assert report.total == (4 << 20) + 512
    assert report.by_kind() == {"version": (2, 4 << 20), "workspace": (1, 512)}
    assert [human(n) for n in (512, 1536, 3 << 20, 5 << 30)] == ["512 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]
    assert "| version | 2 | 4.0 MiB |" in apply.summary_markdown(report)


def test_seaweedfs_sizes_its_volumes_from_the_disk_and_reclaims_deleted_space(tmp_path: Path):
    settings = services.Settings(_env_file=None, state_dir=tmp_path, s3_access_key_id="k", s3_secret_access_key="s")
    command = services.seaweedfs(settings).command
    assert "-volume.max=0" in command  # 0 = as many 64 MiB volumes as the free disk holds
    assert "-master.volumeSizeLimitMB=64" in command  # small: every bucket (collection) gets volumes of its own
    assert "-master.garbageThreshold=0.1" in command
    assert not [flag for flag in command if flag.startswith("-volume.max=") and flag != "-volume.max=0"]


def test_the_cli_has_a_dry_run_by_default():
    from flows.cli.main import build_parser

    args = build_parser().parse_args(["gc"])
    assert (args.apply, args.keep_days, args.params_file) == (False, None, "params.yaml")
    assert build_parser().parse_args(["gc", "--apply", "--keep-days", "3"]).keep_days == 3


# ---------------------------------------------------------------- what grows beside the data (review N4, N6)


class FakeRuns:
    """Finished flow runs as the Prefect API would list them: `finished_before` filters by end time."""

    def __init__(self, ended: dict[str, datetime]):
        self.ended, self.deleted = ended, []

    def finished_before(self, cutoff: datetime) -> list[history.FlowRunInfo]:
        return [history.FlowRunInfo(run, f"name-{run}", when) for run, when in self.ended.items() if when < cutoff]

    def delete(self, run_id: str) -> None:
        self.deleted.append(run_id)


def test_flow_runs_past_prefect_keep_days_go_unless_they_made_a_kept_version():
    runs = FakeRuns({"old": days_ago(31), "old-registered": days_ago(90), "recent": days_ago(29)})
    rules = RULES.model_copy(update={"prefect_keep_days": 30})
    deletions = history.plan_flow_runs(runs, {"old-registered"}, rules, NOW)
    assert [(d.kind, d.where) for d in deletions] == [("flow-run", "prefect flow run name-old (old)")]
    report = Report(deletions, applied=True)
    apply.apply_one(client=None, deletion=deletions[0], report=report)
    assert runs.deleted == ["old"] and not report.failed


def test_without_a_prefect_server_the_flow_run_rule_is_skipped_in_one_line(tmp_path: Path):
    import socket

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    settings = services.Settings(_env_file=None, state_dir=tmp_path, prefect_port=port)
    reason = history.prefect_reachable(settings)
    assert reason and "\n" not in reason


def big_file(path: Path, size: int) -> Path:
    path.write_bytes(b"x" * size)
    return path


def test_a_service_log_past_its_cap_is_rotated_and_copies_beyond_log_keep_dropped(tmp_path: Path):
    rules = RULES.model_copy(update={"log_max_mb": 0.001, "log_keep": 2})  # 1000 bytes
    log = big_file(tmp_path / "prefect-server.log", 1500)
    big_file(tmp_path / "prefect-server.log.1", 100)
    big_file(tmp_path / "prefect-server.log.2", 200)
    small = big_file(tmp_path / "seaweedfs.log", 10)
    big_file(tmp_path / "seaweedfs.log.3", 300)  # beyond log_keep=2: left from a larger setting
    deletions = history.plan_logs(tmp_path, rules)
    assert sorted((Path(d.where).name, d.size) for d in deletions) == [("prefect-server.log", 200),
                                                                         ("seaweedfs.log.3", 300)]
    with open(log, "ab") as writer:  # the service holds its log open in append mode while gc rotates it
        report = Report(deletions, applied=True)
        for deletion in deletions:
            apply.apply_one(None, deletion, report)
        writer.write(b"after")
        writer.flush()
    assert log.read_bytes() == b"after"  # truncated in place: the service's next line starts the log again
    assert [(tmp_path / f"prefect-server.log.{n}").stat().st_size for n in (1, 2)] == [1500, 100]
    assert not (tmp_path / "prefect-server.log.3").exists() and not (tmp_path / "seaweedfs.log.3").exists()
    assert small.read_bytes() == b"x" * 10
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= (1 + rules.log_keep) * 1500  # bounded: the log and log_keep copies, each about one cap


def test_a_service_log_is_rotated_by_rename_when_its_service_starts(tmp_path: Path):
    from flows.ops.services.processes import rotate_log

    log = big_file(tmp_path / "worker.log", 50)
    assert rotate_log(log, 100, 3, live=False) is None and log.exists()  # under the cap: left alone
    big_file(log, 150)
    assert rotate_log(log, 100, 3, live=False) == 0
    assert not log.exists() and (tmp_path / "worker.log.1").stat().st_size == 150


def test_sweep_plots_go_after_keep_days_but_a_named_study_keeps_its_newest_run():
    runs = {"ner/r1": days_ago(40), "ner/r2": days_ago(20), "old-study/r3": days_ago(30), "new/r4": days_ago(1)}
    assert history.select_sweep_runs(runs, {"ner"}, NOW, 14) == ["ner/r1", "old-study/r3"]
    assert history.select_sweep_runs(runs, set(), NOW, 14) == ["ner/r1", "ner/r2", "old-study/r3"]


def test_studies_are_named_by_the_params_files_and_kept_versions(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sweep": {"study": "wnut"}}))
    (tmp_path / "params-other.yaml").write_text(yaml.safe_dump({"train": {}}))
    manifests = [{"metadata": {"params": {"sweep": {"study": "sst2"}}}}, {"metadata": {}}]
    assert history.named_studies(tmp_path, manifests) == {"wnut", "sst2"}


def test_the_sweep_journal_loses_stale_unnamed_studies_and_keeps_the_rest(tmp_path: Path):
    import optuna

    journal = tmp_path / "optuna-journal.log"
    for name in ("kept", "stale"):
        study = optuna.create_study(study_name=name, storage=history.journal_storage(journal))
        study.add_trial(optuna.trial.create_trial(params={"x": 1.0}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 2)}, value=0.5))
    later = datetime.now(UTC) + timedelta(days=20)  # every trial is 20 days old then
    deletions, waiting = history.plan_journal(journal, {"kept"}, RULES, later)
    assert waiting is None and [d.kind for d in deletions] == ["sweep-journal"] and "stale" in deletions[0].where
    assert history.plan_journal(journal, {"kept"}, RULES, datetime.now(UTC)) == ([], None)  # young: nothing goes
    apply.apply_one(None, deletions[0], Report(deletions, applied=True))
    after = history.journal_storage(journal)
    assert [s.study_name for s in after.get_all_studies()] == ["kept"]
    assert [t.value for t in optuna.load_study(study_name="kept", storage=after).trials] == [0.5]


def test_the_sweep_journal_waits_while_a_trial_runs(tmp_path: Path):
    import optuna

    journal = tmp_path / "optuna-journal.log"
    optuna.create_study(study_name="s", storage=history.journal_storage(journal)).ask()  # RUNNING
    deletions, waiting = history.plan_journal(journal, set(), RULES, datetime.now(UTC) + timedelta(days=20))
    assert deletions == [] and "a trial is running" in waiting


class FakeS3:
    """Objects in memory, with the calls `apply.delete` makes."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = dict(objects)

    def get_object(self, Bucket, Key):  # noqa: N803 - boto3's names
        import io

        return {"Body": io.BytesIO(self.objects[Key])}

    def put_object(self, Bucket, Key, Body):  # noqa: N803
        self.objects[Key] = Body

    def delete_object(self, Bucket, Key):  # noqa: N803
        self.objects.pop(Key, None)

    def delete_objects(self, Bucket, Delete):  # noqa: N803
        for item in Delete["Objects"]:
            self.objects.pop(item["Key"], None)
        return {}


def version_deletion(alias_moves_in: bool) -> Deletion:
    keys = ("m/2/manifest.json", "m/2/files/w.bin")
    return Deletion("version", "s3://r/m/2/", 10, "r", "r", keys, still_wanted=lambda: None,
                       confirm_after_first=lambda: "an alias points at m v2 now" if alias_moves_in else None)


def test_a_promote_racing_gc_keeps_the_version_whole(monkeypatch):
    """N6: a promote that checked v2 exists just before gc deleted its manifest writes its alias after gc's
    re-check; gc reads the aliases again after the manifest is gone and puts the manifest back."""
    monkeypatch.setattr(apply, "SETTLE_S", 0)
    client = FakeS3({"m/2/manifest.json": b"{}", "m/2/files/w.bin": b"w"})
    report = Report([], applied=True)
    apply.apply_one(client, version_deletion(alias_moves_in=True), report)
    assert client.objects == {"m/2/manifest.json": b"{}", "m/2/files/w.bin": b"w"}
    assert report.skipped and not report.failed
    apply.apply_one(client, version_deletion(alias_moves_in=False), report)
    assert client.objects == {}


def test_the_new_rules_are_in_both_params_files_and_validated():
    for name in ("params.yaml", "params-sentiment.yaml"):
        rules = load_params(ROOT / name).gc
        assert (rules.prefect_keep_days, rules.log_max_mb, rules.log_keep) == (30, 50, 3)
    with pytest.raises(ValueError, match="log_keep"):
        GcParams(**{**RULES.model_dump(), "log_keep": 0})
