"""`flowtune serve --capture` without storage: the bounded buffer and its drops, flushes by size and by age, the
records (schema, redaction, sampling, both kinds), retries, the shutdown flush, and that no storage failure
reaches a request; with a fake store and fake predictors (tests/integration/test_capture.py: the real thing)."""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from fastapi.testclient import TestClient

from flows.serving.app import Metrics, ModelHolder, ModelSource, Served, create_app
from flows.serving.capture import Capture, CaptureConfig
from flows.serving.limits import Limits

KEY = re.compile(r"^(?P<model>[^/]+)/(?P<day>\d{4}-\d{2}-\d{2})/(?P<hour>\d{2})-[0-9a-f]{12}\.jsonl\.gz$")
STAT_KEYS = {"words", "chars", "pieces", "unknown_pieces", "fragmented_words", "urls", "emoji", "non_latin",
             "upper_words", "confidence", "min_confidence", "predicted"}


class FakeStore:
    """Objects by key; `failure` (an exception) is raised by every put while set."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.failure: Exception | None = None
        self.attempts = 0
        self.put_event = threading.Event()

    def put(self, key: str, body: bytes) -> None:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        self.objects[key] = body
        self.put_event.set()

    def check(self) -> None:
        pass

    def records(self) -> list[dict]:
        return [json.loads(line) for key in sorted(self.objects)
                for line in gzip.decompress(self.objects[key]).decode().splitlines()]


class Tagger:
    kind, answer_kind = "ner", "tagger"  # as tasks/kinds' predictors say

    def __init__(self, describe_fails: bool = False):
        self.described: list[int] = []
        self.threads: set[str] = set()
        self.describe_fails = describe_fails

    def predict(self, items, ids):
        sentences = [item.split() if isinstance(item, str) else list(item) for item in items]
        return [{"id": i, "tokens": tokens, "tags": ["O"] * len(tokens)}
                for i, tokens in zip(ids, sentences, strict=True)]

    def describe(self, items, answers):
        if self.describe_fails:
            raise RuntimeError("tokenizer gone")
        self.described.append(len(items))
        self.threads.add(threading.current_thread().name)
        return [{"words": len(a["tokens"]), "chars": sum(map(len, a["tokens"])), "pieces": len(a["tokens"]),
                 "unknown_pieces": 0, "fragmented_words": 0, "urls": 0, "emoji": 0, "non_latin": 0, "upper_words": 0,
                 "confidence": 0.9, "min_confidence": 0.8, "predicted": []} for a in answers]


class Classifier(Tagger):
    kind, answer_kind = "textclass", "classifier"

    def predict(self, items, ids):
        return [{"id": i, "text": item, "label": "positive", "probabilities": {"positive": 0.7, "negative": 0.3}}
                for i, item in zip(ids, items, strict=True)]

    def describe(self, items, answers):
        return [{**dict.fromkeys(STAT_KEYS, 0), "confidence": 0.7, "min_confidence": 0.7, "predicted": [a["label"]]}
                for a in answers]


def served(predictor=None, name: str = "tagger", version: int | None = 3) -> Served:
    return Served(name, version, predictor or Tagger(), None)


def capture(store: FakeStore | None = None, draw=None, **config) -> tuple[Capture, FakeStore, Metrics]:
    store, metrics = store or FakeStore(), Metrics()
    options = {"bucket": "flowtune-capture", "flush_s": 3600.0, **config}
    extra = {"draw": draw} if draw else {}
    return Capture(CaptureConfig(**options), store, metrics, **extra), store, metrics


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def add(cap: Capture, model: Served, texts: list[str], request: str = "r1", latency_ms: float = 12.5) -> None:
    cap.add(model, request, latency_ms, texts, model.predictor.predict(texts, [str(i) for i in range(len(texts))]))


def wait_until(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------ records


def test_each_item_is_one_record_with_the_schema_in_an_object_per_model_and_utc_hour():
    cap, store, metrics = capture()
    cap.now = lambda: 1_765_000_000.25  # 2025-12-06T05:46:40.250Z
    model = served()
    add(cap, model, ["Alice flew to Paris", "hi"], request="req-1", latency_ms=12.3456)
    cap.flush()
    [key] = store.objects
    match = KEY.match(key)
    assert match and match["model"] == "tagger" and (match["day"], match["hour"]) == ("2025-12-06", "05"), key
    first, second = store.records()
    assert list(first) == ["ts", "model", "version", "kind", "request", "latency_ms", "input", "output", "stats"]
    assert first["ts"] == "2025-12-06T05:46:40.250Z"
    assert (first["model"], first["version"], first["kind"], first["request"]) == ("tagger", 3, "ner", "req-1")
    assert first["latency_ms"] == 12.346
    assert first["input"] == "Alice flew to Paris" and second["input"] == "hi"
    assert first["output"] == {"id": "0", "tokens": ["Alice", "flew", "to", "Paris"], "tags": ["O"] * 4}
    assert set(first["stats"]) == STAT_KEYS and first["stats"]["words"] == 4 and second["stats"]["words"] == 1
    assert value(metrics, "flowtune_capture_written_total") == 2 and cap.buffered() == 0


def test_a_classifier_records_textclass_and_a_folder_model_its_folder_name():
    cap, store, _ = capture()
    model = served(Classifier(), name="/srv/models/sentiment-v7", version=None)
    add(cap, model, ["great film"])
    cap.flush()
    [key] = store.objects
    assert key.startswith("sentiment-v7/")
    [record] = store.records()
    assert (record["model"], record["version"], record["kind"]) == ("sentiment-v7", None, "textclass")
    assert record["output"]["label"] == "positive" and record["stats"]["predicted"] == ["positive"]


def test_tokens_are_recorded_as_token_lists():
    cap, store, _ = capture()
    add(cap, served(), [["New York", "!"]])
    cap.flush()
    assert store.records()[0]["input"] == ["New York", "!"]


def test_redact_drops_the_text_and_the_answer_but_keeps_the_statistics():
    cap, store, _ = capture(redact=True)
    add(cap, served(), ["Alice flew to Paris"])
    cap.flush()
    [record] = store.records()
    assert "input" not in record and "output" not in record
    assert set(record["stats"]) == STAT_KEYS and record["stats"]["words"] == 4
    assert "Alice" not in gzip.decompress(next(iter(store.objects.values()))).decode()


def test_when_describe_fails_the_record_is_written_without_stats():
    cap, store, _ = capture()
    add(cap, served(Tagger(describe_fails=True)), ["hi"])
    cap.flush()
    [record] = store.records()
    assert "stats" not in record and record["input"] == "hi"


def test_sample_zero_records_nothing_one_everything_and_a_share_draws_per_item():
    nothing, store, metrics = capture(sample=0.0)
    add(nothing, served(), ["a", "b", "c"])
    assert nothing.buffered() == 0
    nothing.flush()
    assert store.objects == {} and value(metrics, "flowtune_capture_dropped_total", reason="buffer_full") == 0

    draws = iter([0.1, 0.9, 0.3, 0.6])  # below 0.5: recorded
    half, store, _ = capture(sample=0.5, draw=lambda: next(draws))
    add(half, served(), ["a", "b", "c", "d"])
    half.flush()
    assert [(r["input"], r["output"]["id"]) for r in store.records()] == [("a", "0"), ("c", "2")]

    everything, store, _ = capture(sample=1.0, draw=lambda: pytest.fail("sample 1 draws nothing"))
    add(everything, served(), ["a", "b", "c"])
    everything.flush()
    assert [r["input"] for r in store.records()] == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------ buffer and flushes


def test_the_buffer_is_bounded_and_what_does_not_fit_is_dropped_and_counted():
    cap, store, metrics = capture(max_buffer_items=5, flush_items=5)
    model = served()
    add(cap, model, ["a", "b", "c"])
    add(cap, model, ["d", "e", "f"])  # 6 > 5: the whole request is dropped
    add(cap, model, ["g", "h"])
    assert cap.buffered() == 5 and value(metrics, "flowtune_capture_buffer_items") == 5
    assert value(metrics, "flowtune_capture_dropped_total", reason="buffer_full") == 3
    cap.flush()
    assert [r["input"] for r in store.records()] == ["a", "b", "c", "g", "h"]
    assert cap.buffered() == 0 and value(metrics, "flowtune_capture_buffer_items") == 0


def test_a_full_batch_is_written_at_once_by_the_thread_in_objects_of_at_most_flush_items():
    cap, store, _ = capture(flush_items=4, max_buffer_items=100)
    model = served()
    cap.start()
    try:
        add(cap, model, ["a", "b", "c"])
        time.sleep(0.2)
        assert store.objects == {}  # 3 < 4 and the age limit is an hour away
        add(cap, model, ["d", "e", "f", "g", "h"])
        wait_until(lambda: len(store.records()) == 8, timeout_s=5)
    finally:
        cap.close(5)
    assert sorted(len(gzip.decompress(body).splitlines()) for body in store.objects.values()) == [4, 4]
    assert model.predictor.threads == {"flowtune-serve-capture"}  # describe ran in the writer thread only


def test_a_batch_is_written_once_its_oldest_item_is_flush_s_old():
    cap, store, _ = capture(flush_items=1000, flush_s=0.3)
    cap.start()
    try:
        started = time.monotonic()
        add(cap, served(), ["a"])
        wait_until(lambda: store.objects, timeout_s=5)
        waited = time.monotonic() - started
    finally:
        cap.close(5)
    assert 0.25 <= waited < 5, waited  # an hour-long flush_s would never have written it
    assert [r["input"] for r in store.records()] == ["a"]


def test_close_writes_what_is_left_and_a_hung_store_is_given_up_within_the_time():
    cap, store, metrics = capture()
    cap.start()
    add(cap, served(), ["a", "b"])
    cap.close(5)
    assert [r["input"] for r in store.records()] == ["a", "b"] and not cap.thread.is_alive()

    hung = FakeStore()
    release = threading.Event()
    hung.put = lambda key, body: release.wait(30)
    cap, _, metrics = capture(hung)
    cap.start()
    add(cap, served(), ["a", "b", "c"])
    started = time.monotonic()
    cap.close(0.5)
    release.set()
    assert time.monotonic() - started < 3
    assert value(metrics, "flowtune_capture_dropped_total", reason="storage") == 3


def test_what_close_has_no_time_left_to_write_is_counted_as_dropped():
    cap, store, metrics = capture()
    store.failure = DOWN
    add(cap, served(), ["a", "b"])
    cap.flush()  # kept for a retry
    cap.start()
    cap.close(0)
    assert cap.buffered() == 0 and value(metrics, "flowtune_capture_dropped_total", reason="storage") == 2


# ------------------------------------------------------------------------------------------ storage failures

DOWN = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
REFUSED = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")


def test_a_passing_storage_failure_is_retried_by_the_next_flush_with_the_same_key():
    cap, store, metrics = capture(max_buffer_items=20, flush_items=10)
    add(cap, served(), ["a", "b"])
    store.failure = DOWN
    cap.flush()
    assert cap.buffered() == 2 and value(metrics, "flowtune_capture_dropped_total", reason="storage") == 0
    [kept] = cap.retry
    store.failure = None
    add(cap, served(), ["c"])
    cap.flush()
    assert kept.key in store.objects  # a retry after a lost reply overwrites, never duplicates
    assert sorted(r["input"] for r in store.records()) == ["a", "b", "c"]
    assert value(metrics, "flowtune_capture_written_total") == 3 and cap.buffered() == 0


def test_a_long_outage_keeps_the_newest_failed_batches_and_drops_the_oldest():
    cap, store, metrics = capture(max_buffer_items=6, flush_items=2)  # retries may hold 6 - 2 = 4 items
    store.failure = DOWN
    for pair in (["a", "b"], ["c", "d"], ["e", "f"]):
        add(cap, served(), pair)
        cap.flush()
    assert [json.loads(line)["input"] for batch in cap.retry for line in batch.lines] == ["c", "d", "e", "f"]
    assert cap.buffered() == 4 and value(metrics, "flowtune_capture_dropped_total", reason="storage") == 2
    add(cap, served(), ["g", "h"])  # 4 + 2 fit the buffer ...
    add(cap, served(), ["i"])  # ... this does not
    assert value(metrics, "flowtune_capture_dropped_total", reason="buffer_full") == 1
    store.failure = REFUSED  # refused keys or a missing bucket: no retry at all
    cap.flush()
    assert cap.buffered() == 0 and value(metrics, "flowtune_capture_dropped_total", reason="storage") == 2 + 6


def test_retries_give_way_when_new_items_fill_the_buffer_during_the_failed_flush():
    cap, store, metrics = capture(max_buffer_items=6, flush_items=2)
    add(cap, served(), ["a", "b", "c"])  # written as [a, b] and [c]
    arrived = []

    def down_while_traffic_arrives(key, body):
        if not arrived:
            arrived.append(1)
            add(cap, served(), ["d", "e"])  # answered while the write hangs
        raise DOWN

    store.put = down_while_traffic_arrives
    cap.flush()
    assert [e.items for e in cap.queue] == [["d", "e"]]
    assert [[json.loads(line)["input"] for line in batch.lines] for batch in cap.retry] == [["c"]]  # 2 + 1 <= 4
    assert value(metrics, "flowtune_capture_dropped_total", reason="storage") == 2  # [a, b]: 2 + 1 + 2 > 4


def test_a_final_flush_keeps_nothing_for_later():
    cap, store, metrics = capture()
    store.failure = DOWN
    add(cap, served(), ["a"])
    cap.flush(final=True)
    assert cap.buffered() == 0 and value(metrics, "flowtune_capture_dropped_total", reason="storage") == 1


# ------------------------------------------------------------------------------------------ in the service


def app_with(tmp_path: Path, cap: Capture, predictor=None):
    metrics = cap.metrics
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    holder = ModelHolder(ModelSource(str(folder), lambda: None, tmp_path), metrics, 8, None, 60,
                         loader=lambda path, batch, length: predictor or Tagger())
    return create_app(holder, metrics, Limits(max_batch_size=8, max_wait_ms=1), cap)


def test_requests_are_answered_while_storage_fails_and_the_drops_show_in_metrics(tmp_path: Path):
    store = FakeStore()
    store.failure = REFUSED
    cap, _, metrics = capture(store, flush_items=2, max_buffer_items=4)
    app = app_with(tmp_path, cap)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        statuses = [client.post("/v1/predict", json={"texts": ["a b", "c"]}) for _ in range(6)]
        assert {r.status_code for r in statuses} == {200}
        assert all(re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]) for r in statuses)
        wait_until(lambda: value(metrics, "flowtune_capture_dropped_total", reason="storage") >= 2)
        text = client.get("/metrics").text
    assert 'flowtune_capture_dropped_total{reason="storage"}' in text
    assert "flowtune_capture_written_total 0.0" in text and "flowtune_capture_buffer_items" in text


def test_a_broken_capture_never_fails_the_request(tmp_path: Path):
    cap, store, _ = capture()

    def broken(*args):
        raise RuntimeError("a bug in the capture")

    cap.add = broken
    with TestClient(app_with(tmp_path, cap)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 200


def test_the_service_writes_the_answers_it_gave_and_flushes_them_at_shutdown(tmp_path: Path):
    cap, store, metrics = capture(flush_s=3600)
    with TestClient(app_with(tmp_path, cap, Classifier())) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        reply = client.post("/v1/predict", json={"texts": ["good", "bad"], "ids": ["x", "y"]})
        assert store.objects == {}  # neither full nor old: waits in memory
    # leaving the client is the shutdown: the lifespan's close wrote the buffer
    records = store.records()
    assert [r["output"] for r in records] == reply.json()["predictions"]
    assert {r["request"] for r in records} == {reply.headers["X-Request-Id"]}
    assert all(r["kind"] == "textclass" and r["version"] is None and r["latency_ms"] > 0 for r in records)


# ------------------------------------------------------------------------------------------ configuration


def cli_args(tmp_path: Path, **overrides) -> argparse.Namespace:
    values = {"params_file": str(tmp_path / "params.yaml"), "capture": None, "capture_sample": None,
              "capture_redact": None, "grace_s": 7.0, **overrides}
    return argparse.Namespace(**values)


SECTION = ("serve:\n  capture:\n    enabled: {enabled}\n    sample: 0.5\n    redact: false\n"
           "    max_buffer_items: 100\n    flush_items: 10\n    flush_s: 5\n    bucket: {bucket}\n")


def test_the_command_line_overrides_serve_capture_of_the_params_file(tmp_path: Path, monkeypatch):
    from flows.cli.serve import capture_config

    monkeypatch.setenv("FLOWTUNE_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("FLOWTUNE_S3_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("FLOWTUNE_CAPTURE_BUCKET", "from-settings")
    (tmp_path / "params.yaml").write_text(SECTION.format(enabled="false", bucket="null"))
    assert capture_config(cli_args(tmp_path)) is None  # off in the file
    config = capture_config(cli_args(tmp_path, capture=True, capture_redact=True))
    assert config == CaptureConfig("from-settings", 0.5, True, 100, 10, 5.0, close_s=7.0)
    (tmp_path / "params.yaml").write_text(SECTION.format(enabled="true", bucket="mine"))
    assert capture_config(cli_args(tmp_path, capture_sample=0.0)).sample == 0.0
    assert capture_config(cli_args(tmp_path)).bucket == "mine"
    assert capture_config(cli_args(tmp_path, capture=False)) is None
    with pytest.raises(SystemExit, match="--capture-sample 1.5: expected a share from 0 to 1"):
        capture_config(cli_args(tmp_path, capture_sample=1.5))


def test_capture_settings_errors_name_the_file_and_the_key(tmp_path: Path, monkeypatch):
    from flows.cli.serve import capture_config

    monkeypatch.chdir(tmp_path)
    assert capture_config(cli_args(tmp_path, params_file="absent.yaml")) is None  # no file: off
    with pytest.raises(SystemExit, match="--capture reads `serve.capture` from absent.yaml, which does not exist"):
        capture_config(cli_args(tmp_path, params_file="absent.yaml", capture=True))
    (tmp_path / "params.yaml").write_text(SECTION.format(enabled="true", bucket="null").replace("0.5", "2"))
    with pytest.raises(SystemExit, match=r"params.yaml: serve.capture.sample: Input should be less than or equal"):
        capture_config(cli_args(tmp_path))
    (tmp_path / "params.yaml").write_text(SECTION.format(enabled="true", bucket="null").replace("100", "5"))
    with pytest.raises(SystemExit, match=r"flush_items \(10\) must not exceed max_buffer_items \(5\)"):
        capture_config(cli_args(tmp_path))


def test_both_params_files_hold_the_capture_section_off_by_default():
    from tasks.params import load_params
    from tests.helpers import ROOT

    for name in ("params.yaml", "params-sentiment.yaml"):
        capture = load_params(ROOT / name).serve.capture
        assert (capture.enabled, capture.sample, capture.redact, capture.bucket) == (False, 1.0, False, None), name
        assert capture.flush_items <= capture.max_buffer_items


def test_services_up_creates_the_capture_bucket_and_anonymous_readers_may_not_read_it():
    from pydantic import SecretStr

    from flows.ops.services import buckets, s3_identities
    from tasks.settings import Settings

    settings = Settings(_env_file=None, capture_bucket="my-capture", s3_access_key_id="k",
                        s3_secret_access_key=SecretStr("s"))
    assert "my-capture" in buckets(settings)  # created (and probed with a write) by `services up`
    anonymous = next(i for i in s3_identities(settings)["identities"] if i["name"] == "anonymous")
    assert not any("my-capture" in action for action in anonymous["actions"])
