"""`flowtune serve --capture` for real: a tiny tagger from the session's registry (SeaweedFS) answers requests, and
the captured batches appear in the capture bucket that `services up` created, with the key layout and one record
per answered item; the rest is written at SIGTERM. With storage down, every request still gets 200 and the
dropped items are counted in /metrics."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from flows.registry import Registry
from tasks.settings import s3_client
from tests.helpers import find_free_port
from tests.integration.test_serve import Service, tiny_tagger

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = re.compile(r"^(?P<model>[a-z0-9-]+)/(?P<day>\d{4}-\d{2}-\d{2})/(?P<hour>\d{2})-[0-9a-f]{12}\.jsonl\.gz$")
STAT_KEYS = {"words", "chars", "pieces", "unknown_pieces", "fragmented_words", "urls", "emoji", "non_latin",
             "upper_words", "confidence", "min_confidence", "predicted"}


def capture_params(path: Path, **capture) -> Path:
    """A params file with only the section serve reads (`serve.capture`); off unless --capture."""
    section = {"enabled": False, "sample": 1.0, "redact": False, "max_buffer_items": 50, "flush_items": 5,
               "flush_s": 60, "bucket": None, **capture}
    path.write_text(json.dumps({"serve": {"capture": section}}))  # JSON is YAML
    return path


def metric(service: Service, name: str, **labels) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{re.escape(name + selector)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{selector} not in /metrics:\n{text}"
    return float(found[1])


def wait_for(condition, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not in {timeout_s} s: {what}"
        time.sleep(0.2)


def captured(settings, model: str) -> dict[str, list[dict]]:
    client = s3_client(settings)
    listing = client.list_objects_v2(Bucket=settings.capture_bucket, Prefix=f"{model}/").get("Contents", [])
    return {o["Key"]: [json.loads(line) for line in gzip.decompress(
        client.get_object(Bucket=settings.capture_bucket, Key=o["Key"])["Body"].read()).decode().splitlines()]
        for o in listing}


def test_serve_capture_writes_each_answered_item_to_the_capture_bucket(local_services, tiny_base, tmp_path):
    name = f"capture-{uuid.uuid4().hex[:8]}"  # the keys start with the model's name: this test's own
    prefix = f"test-capture-{uuid.uuid4().hex[:8]}"
    registry = Registry(s3_client(local_services), local_services.registry_bucket, prefix)
    registry.set_alias(name, "champion", registry.publish(name, tiny_tagger(tiny_base, tmp_path / "v1", 1), {}))
    params = capture_params(tmp_path / "params.yaml")
    service = Service(local_services, prefix, f"{name}:champion", find_free_port(), "--capture", "--params-file",
                      str(params), "--grace-s", "5")
    sent: dict[str, list] = {}  # request id -> [(input, answer)]
    try:
        service.wait_ready()
        assert "capturing 1 of answered items to s3://flowtune-capture" in service.output
        for body in ({"texts": ["Alice flew to Paris", "hi"]}, {"texts": ["Bob is here today", "x y"]},
                     {"texts": ["one more", "and another"], "ids": ["a", "b"]}, {"tokens": [["New York", "!"]]}):
            reply = httpx.post(f"{service.url}/v1/predict", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            items = body.get("texts") or body["tokens"]
            sent[reply.headers["X-Request-Id"]] = list(zip(items, reply.json()["predictions"], strict=True))
        # 6 items passed flush_items (5): written now, in objects of at most 5; the last request's item waits
        wait_for(lambda: metric(service, "flowtune_capture_written_total") == 6, what="the size-triggered flush")
        assert metric(service, "flowtune_capture_buffer_items") == 1
        assert sum(map(len, captured(local_services, name).values())) == 6
    finally:
        assert service.stop() in (0, -15), service.output[-3000:]
    objects = captured(local_services, name)  # SIGTERM wrote the rest within --grace-s
    now = datetime.now(UTC)
    assert sorted(map(len, objects.values())) == [1, 1, 5], objects.keys()
    for key, lines in objects.items():  # each object holds its UTC hour's items
        match = KEY.match(key)
        assert match and match["model"] == name, key
        assert {(r["ts"][:10], r["ts"][11:13]) for r in lines} == {(match["day"], match["hour"])}, key
        assert abs(datetime.fromisoformat(lines[0]["ts"]) - now).total_seconds() < 600
    records = [record for lines in objects.values() for record in lines]
    assert {(r["request"], json.dumps(r["input"]), json.dumps(r["output"])) for r in records} == {
        (request, json.dumps(item), json.dumps(answer)) for request, pairs in sent.items() for item, answer in pairs}
    for record in records:
        assert (record["model"], record["version"], record["kind"]) == (name, 1, "ner")
        assert record["latency_ms"] > 0 and record["ts"].endswith("Z")
        assert set(record["stats"]) >= {"words", "pieces", "confidence", "predicted"}  # the predictor's describe
        assert "stats" not in record or STAT_KEYS <= set(record["stats"])
    # never public: an anonymous GET of a captured object is refused (the reports bucket's are not)
    anonymous = httpx.get(f"{local_services.endpoint_url}/{local_services.capture_bucket}/{next(iter(objects))}")
    assert anonymous.status_code == 403, anonymous.status_code


def test_with_storage_down_requests_are_answered_and_the_dropped_items_counted(local_services, tiny_base, tmp_path,
                                                                              reliability):
    dead = local_services.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{find_free_port()}"})
    model = tiny_tagger(tiny_base, tmp_path / "model", 1)
    params = capture_params(tmp_path / "params.yaml", enabled=True, max_buffer_items=6, flush_items=2, flush_s=0.2)
    service = Service(dead, "", str(model), find_free_port(), "--params-file", str(params), "--grace-s", "3")
    statuses, latencies = [], []
    try:
        service.wait_ready()
        for _ in range(30):
            started = time.monotonic()
            statuses.append(httpx.post(f"{service.url}/v1/predict", json={"texts": ["Alice flew", "to Paris"]},
                                       timeout=30).status_code)
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

        def accounted() -> bool:  # every captured item is written, waiting or dropped (no flush in flight)
            dropped = sum(metric(service, "flowtune_capture_dropped_total", reason=r) for r in ("buffer_full",
                                                                                              "storage"))
            return dropped + metric(service, "flowtune_capture_buffer_items") == 60

        wait_for(accounted, timeout_s=30, what="60 captured items accounted for")
        storage = metric(service, "flowtune_capture_dropped_total", reason="storage")
        full = metric(service, "flowtune_capture_dropped_total", reason="buffer_full")
        assert metric(service, "flowtune_capture_written_total") == 0
    finally:
        assert service.stop() in (0, -15), service.output[-3000:]
    assert statuses == [200] * 30
    assert storage > 0, (storage, full)
    assert "capture bucket 'flowtune-capture' cannot be reached" in service.output
    assert "kept for the next flush" in service.output and "dropped" in service.output
    assert local_services.secret_key() not in service.output
    reliability(fault="`flowtune serve --capture` with its S3 endpoint dead (nothing listening) from the start",
                happened="every request answered 200; each flush failed at once (one try, the next flush is the "
                         "retry), failed batches were kept while the 6-item buffer had room, then dropped and "
                         "counted in /metrics",
                recovered=True, lost=f"the captured items only ({storage:.0f} dropped for storage, {full:.0f} for a "
                                     "full buffer), never an answer",
                requests=len(statuses), p95_request_s=round(sorted(latencies)[int(0.95 * len(latencies))], 3))
