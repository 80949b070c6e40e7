"""The monitor flow's pieces (flows/ops/monitor.py) over an in-memory S3, the reference profile made at registration
(flows/ops/reference.py) with a fake predictor, and gc's retention of captured traffic."""

from __future__ import annotations

import gzip
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from flows.ops import monitor
from flows.ops.gc import history
from flows.ops.reference import REFERENCE_FILE
from flows.registry import METADATA_FILES
from tasks.drift import Profile, profile_of
from tasks.params import load_params
from tasks.reference import describe_items, evenly, reference_profile
from tasks.settings import Settings
from tests.drift_traffic import line, stats, traffic
from tests.helpers import ROOT

PARAMS = load_params(ROOT / "params.yaml")
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
SINCE = NOW - timedelta(hours=24)


class FakeS3:
    """Buckets of objects in memory, with the calls the monitor and gc make."""

    def __init__(self, buckets: dict[str, dict[str, bytes]], modified: datetime = NOW):
        self.buckets = {b: {k: (v, modified) for k, v in objs.items()} for b, objs in buckets.items()}

    def _bucket(self, name: str) -> dict:
        if name not in self.buckets:
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": name}}, "ListObjectsV2")
        return self.buckets[name]

    def list_objects_v2(self, Bucket, Prefix="", Delimiter=None):  # noqa: N803 - boto3's names
        keys = sorted(k for k in self._bucket(Bucket) if k.startswith(Prefix))
        if Delimiter:
            folders = sorted({Prefix + k[len(Prefix):].split(Delimiter)[0] + Delimiter for k in keys
                              if Delimiter in k[len(Prefix):]})
            return {"CommonPrefixes": [{"Prefix": f} for f in folders]}
        return {"Contents": [{"Key": k, "Size": len(self.buckets[Bucket][k][0]),
                              "LastModified": self.buckets[Bucket][k][1]} for k in keys]}

    def get_paginator(self, _name):
        fake = self

        class Paginator:
            def paginate(self, **kwargs):
                yield fake.list_objects_v2(**kwargs)

        return Paginator()

    def get_object(self, Bucket, Key):  # noqa: N803
        if Key not in self._bucket(Bucket):
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.buckets[Bucket][Key][0])}

    def put_object(self, Bucket, Key, Body, **_):  # noqa: N803
        self._bucket(Bucket)[Key] = (Body, NOW)


SETTINGS = Settings(s3_access_key_id="k", s3_secret_access_key="s", _env_file=None)
_RNG = random.Random(5)
REFERENCE = profile_of(stats(_RNG) for _ in range(1000))


def registry_objects(version: int, reference: Profile | None) -> dict[str, bytes]:
    files = {"config.json": {"sha256": "x", "size": 1}}
    objects = {}
    if reference is not None:
        files[REFERENCE_FILE] = {"sha256": "y", "size": 1}
        objects[f"models/m/{version}/files/{REFERENCE_FILE}"] = json.dumps(reference.to_json()).encode()
    objects[f"models/m/{version}/manifest.json"] = json.dumps({"files": files}).encode()
    return objects


def fake(capture: dict[str, bytes] | None, versions: dict[int, Profile | None]) -> FakeS3:
    registry = {}
    for version, reference in versions.items():
        registry.update(registry_objects(version, reference))
    buckets = {"flowtune-registry": registry, "flowtune-reports": {}}
    if capture is not None:
        buckets["flowtune-capture"] = capture
    return FakeS3(buckets)


def run(client: FakeS3, model: str | None = None) -> tuple[dict, list]:
    return monitor.run_monitor(SETTINGS, PARAMS.monitor, SINCE, NOW, model, client=client)


def test_batch_keys_name_their_hour_and_the_window_lists_only_its_days():
    assert monitor.batch_hour("m/2026-12-07/09-0123456789ab.jsonl.gz") == datetime(2026, 12, 7, 9, tzinfo=UTC)
    assert monitor.batch_hour("m/stray.txt") is None
    client = fake({"m/2026-12-05/10-a.jsonl.gz": b"", "m/2026-12-06/10-a.jsonl.gz": b"",
                   "m/2026-12-06/12-a.jsonl.gz": b"", "m/2026-12-07/11-a.jsonl.gz": b"",
                   "other/2026-12-07/11-a.jsonl.gz": b""}, {})
    keys = monitor.window_keys(client, "flowtune-capture", "m", SINCE, NOW)
    # 12-06 10:00 ended before the window, 11:00 (the hour before it) may hold items flushed late
    assert keys == ["m/2026-12-06/12-a.jsonl.gz", "m/2026-12-07/11-a.jsonl.gz"]
    assert len(monitor.window_keys(client, "flowtune-capture", None, SINCE, NOW)) == 3


def test_unshifted_traffic_is_compared_with_its_versions_reference_and_passes():
    capture = dict(traffic("m", 3, 600, 100, seed=1, end=NOW))
    report, results = run(fake(capture, {3: REFERENCE}))
    assert report["items"] == 600 and report["files"] == 6 and not report["drift"]
    (result,) = results
    assert (result.model, result.version, result.items, result.reference_items) == ("m", 3, 600, 1000)
    assert {r["verdict"] for r in report["versions"][0]["rows"]} == {"ok"}
    assert monitor.drift_events(results, None) == []


def test_shifted_traffic_flags_its_measures_and_makes_one_event_per_model_version():
    capture = dict(traffic("m", 3, 600, 200, seed=2, shift={"urls", "caps"}, end=NOW))
    capture.update(traffic("m", 4, 300, 300, seed=3, end=NOW))
    report, results = run(fake(capture, {3: REFERENCE, 4: REFERENCE}))
    assert [v["drifted"] for v in report["versions"]] == [["url", "all_caps"], []]
    (event,) = monitor.drift_events(results, "http://s3/report.json")
    assert event["event"] == "flowtune.drift.detected"
    assert event["resource"]["prefect.resource.id"] == "flowtune.model.m"
    assert [m["measure"] for m in event["payload"]["measures"]] == ["url", "all_caps"]
    assert event["payload"]["summary"].startswith("m v3 drifted on 600 items: url (PSI ")
    assert event["payload"]["report"] == "http://s3/report.json"


def test_bad_files_and_lines_are_counted_by_file_and_the_rest_is_compared():
    good = dict(traffic("m", 3, 400, 200, seed=4, end=NOW))
    day = f"s3://flowtune-capture/m/{NOW:%Y-%m-%d}"
    text = json.dumps(line(random.Random(1), NOW - timedelta(minutes=1), "m", 3)) + "\n{broken\n"
    folder = day.removeprefix("s3://flowtune-capture/")
    capture = {**good, f"{folder}/10-truncated.jsonl.gz": next(iter(good.values()))[:-200],
               f"{folder}/10-notgzip.jsonl.gz": b"hello", f"{folder}/10-lines.jsonl.gz": gzip.compress(text.encode())}
    report, results = run(fake(capture, {3: REFERENCE}))
    assert report["items"] == 401 and report["files"] == 5
    assert set(report["skipped_files"]) == {f"{day}/10-truncated.jsonl.gz", f"{day}/10-notgzip.jsonl.gz"}
    bad = report["bad_lines"]
    assert list(bad) == [f"{day}/10-lines.jsonl.gz"] and bad[f"{day}/10-lines.jsonl.gz"]["count"] == 1
    assert bad[f"{day}/10-lines.jsonl.gz"]["examples"][0].startswith("line 2: ")
    assert results[0].rows  # the good files were still compared
    assert f"skipped {day}/10-notgzip.jsonl.gz: skipped after line 0: BadGzipFile" in monitor.text_table(report)


def test_a_window_without_traffic_or_without_a_capture_bucket_says_so():
    report, results = run(fake({}, {3: REFERENCE}))
    assert report["status"].startswith("no traffic in the window (0 batch file(s) read")
    assert results == [] and not report["drift"]
    report, _ = run(fake(None, {}))
    assert "capture bucket 'flowtune-capture' does not exist" in report["status"]


def test_few_items_old_versions_and_folder_models_get_no_verdict_and_say_why():
    capture = dict(traffic("m", 3, 50, 50, seed=5, end=NOW))
    capture.update(traffic("m", 2, 300, 300, seed=6, end=NOW))
    capture.update(traffic("m", None, 300, 300, seed=7, end=NOW))
    capture.update(traffic("m", 9, 300, 300, seed=8, end=NOW))
    report, results = run(fake(capture, {2: None, 3: REFERENCE}))
    notes = {v["version"]: v["note"] for v in report["versions"]}
    assert "has no reference.json (registered before reference profiles" in notes[2]
    assert "served from a model folder" in notes[None]
    assert "no registered version to compare with" in notes[9]
    assert notes[3].startswith("too few items for a verdict: 50 in the window, 1000 in the reference")
    assert not report["drift"] and all(not r.drifted for r in results)


def test_the_report_plots_and_json_go_to_the_reports_bucket():
    client = fake(dict(traffic("m", 3, 300, 300, seed=9, shift={"long"}, end=NOW)), {3: REFERENCE})
    report, results = run(client)
    urls = monitor.publish_report(SETTINGS, "run1", report, results, PARAMS.monitor, client=client)
    stored = client.buckets["flowtune-reports"]
    svg = stored["monitor/run1/m-v3.svg"][0].decode()
    ElementTree.fromstring(svg)  # well-formed
    assert svg.count("<rect") > 60 and 'fill="#c00">words  PSI ' in svg and 'fill="#000">url  PSI ' in svg
    assert json.loads(stored["monitor/run1/report.json"][0])["versions"][0]["drifted"] == ["words", "pieces"]
    assert urls["report"].endswith("/flowtune-reports/monitor/run1/report.json")
    assert monitor.artifact_key(results[0]) == "drift-m-v3"
    assert "**drift**: words, pieces" in monitor.summary_markdown(report, urls)


def test_the_window_is_since_before_now_or_the_params_window():
    start, end = monitor.resolve_window(None, PARAMS.monitor, NOW)
    assert (start, end) == (NOW - timedelta(hours=24), NOW)
    assert monitor.resolve_window("2h", PARAMS.monitor, NOW)[0] == NOW - timedelta(hours=2)


# ---------------------------------------------------------------- the reference made at registration


class FakePredictor:
    """Describes an item by its length, like a predictor's `describe` would; records the batches it got."""

    def __init__(self):
        self.batches: list[int] = []

    def predict(self, items, ids):
        self.batches.append(len(items))
        return [{"id": i} for i in ids]

    def describe(self, items, answers):
        return [{"words": len(x), "chars": len(" ".join(x)), "pieces": 2 * len(x), "unknown_pieces": 0,
                 "fragmented_words": 0, "urls": 0, "emoji": 0, "non_latin": 0, "upper_words": 0, "confidence": 0.9,
                 "min_confidence": 0.8, "predicted": []} for x in items]


def test_the_reference_profiles_evenly_spaced_test_items_through_the_predictor(tmp_path: Path):
    test = tmp_path / "augmented" / "test.jsonl"
    test.parent.mkdir()
    rows = [{"id": str(i), "tokens": ["w"] * (1 + i % 30), "tags": ["O"] * (1 + i % 30)} for i in range(100)]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = PARAMS.model_copy(update={
        "paths": PARAMS.paths.model_copy(update={"augmented": str(test.parent)}),
        "monitor": PARAMS.monitor.model_copy(update={"reference_items": 40})})
    predictor = FakePredictor()
    seen = []
    reference = reference_profile(params, tmp_path / "model",
                                  lambda d, b, m: seen.append((d, b, m)) or predictor)
    assert seen == [(tmp_path / "model", PARAMS.evaluate.batch_size, None)]
    profile = Profile.from_json(reference, "reference")
    assert profile.items == 40 and sum(predictor.batches) == 40
    assert profile.sums["words"] == sum(1 + (i * 100 // 40) % 30 for i in range(40))
    assert REFERENCE_FILE in METADATA_FILES  # a new reference never makes the same weights a new version


def test_a_reference_not_made_is_a_warning_in_the_stage_and_at_registration(tmp_path: Path, caplog, monkeypatch):
    """The evaluate stage writes the reason instead of a profile (the stage still succeeds); registration then
    stores no reference.json and says why, as it does when the stage's output is missing altogether."""
    import logging

    from flows.ops import reference as registration
    from tasks import reference as stage

    # Prefect's logging set-up (run by earlier tests in this process) disables loggers that existed before it.
    for logger in (registration.logger, stage.logger):
        monkeypatch.setattr(logger, "disabled", False)
        caplog.set_level(logging.WARNING, logger=logger.name)

    def broken(*_):
        raise RuntimeError("predictor exploded")

    out = tmp_path / "metrics" / "drift_reference.json"
    params = PARAMS.model_copy(update={"paths": PARAMS.paths.model_copy(update={
        "augmented": str(tmp_path), "drift_reference": str(out)})})
    assert registration.reference_or_none(params) is None  # no evaluate output in this checkout
    assert f"reference.json not stored ([Errno 2] No such file or directory: '{out}')" in caplog.text

    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "1", "tokens": ["a"], "tags": ["O"]}) + "\n")
    assert stage.write_reference(params, tmp_path, out, broken) is False
    assert "no drift reference" in caplog.text and "RuntimeError: predictor exploded" in caplog.text
    assert registration.reference_or_none(params) is None
    assert f"{out}: no profile was made (RuntimeError: predictor exploded)" in caplog.text

    assert stage.write_reference(params, tmp_path, out, lambda *_: FakePredictor()) is True
    assert Profile.from_json(registration.reference_or_none(params), "reference").items == 1


def test_evenly_spreads_and_describe_items_batches():
    assert evenly(list(range(10)), 4) == [0, 2, 5, 7] and evenly([1, 2], 5) == [1, 2]
    predictor = FakePredictor()
    assert len(describe_items(predictor, [["a"]] * 5, 2)) == 5 and predictor.batches == [2, 2, 1]


# ---------------------------------------------------------------- gc of captured traffic


def test_gc_deletes_captured_days_past_capture_keep_days_and_says_when_there_is_no_bucket():
    client = FakeS3({"flowtune-capture": {}})
    old, young = NOW - timedelta(days=31), NOW - timedelta(days=29)
    client.buckets["flowtune-capture"] = {"m/2026-11-05/10-a.jsonl.gz": (b"12345", old),
                                          "m/2026-11-05/11-b.jsonl.gz": (b"1", old),
                                          "m/2026-11-07/10-a.jsonl.gz": (b"1", young)}
    deletions, note = history.plan_captures(client, "flowtune-capture", PARAMS.gc, NOW)
    assert note is None and PARAMS.gc.capture_keep_days == 30
    (deletion,) = deletions
    assert deletion.where == "s3://flowtune-capture/m/2026-11-05/" and deletion.size == 6
    assert deletion.keys == ("m/2026-11-05/10-a.jsonl.gz", "m/2026-11-05/11-b.jsonl.gz")
    assert history.plan_captures(FakeS3({}), "flowtune-capture", PARAMS.gc, NOW) == (
        [], "captured data: no bucket 'flowtune-capture' (nothing captured)")


@pytest.mark.parametrize("name", ["params.yaml", "params-sentiment.yaml"])
def test_both_params_files_have_the_monitor_section(name):
    params = load_params(ROOT / name)
    assert params.monitor.window == "24h" and params.gc.capture_keep_days == 30
