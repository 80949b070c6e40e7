"""`flowtune serve` without a model: micro-batching and fair shares, request limits, backpressure, the token,
readiness and liveness, metrics and the hot swap's rules, with a fake registry and fake predictors
(tests/integration/test_serve.py runs the real thing)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flows.serving.app import Metrics, ModelHolder, ModelSource, create_app
from flows.serving.batcher import MicroBatcher, Overloaded
from flows.serving.limits import MAX_BODY_BYTES, MAX_ITEMS, MAX_WORDS, Limits

# ------------------------------------------------------------------------------------------ micro-batching


def batcher_run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_answers():
    passes = []

    def run_batch(model, items, ids):
        passes.append(list(items))
        return [f"{model}:{item}" for item in items]

    async def scenario():
        batcher = MicroBatcher(lambda: "m1", run_batch, max_batch_size=8, max_wait_ms=200)
        batcher.start()
        answers = await asyncio.gather(batcher.submit(["a", "b"], ["0", "1"]), batcher.submit(["c"], ["0"]),
                                       batcher.submit(["d", "e"], ["0", "1"]))
        await batcher.stop()
        return answers

    answers = batcher_run(scenario())
    assert passes == [["a", "b", "c", "d", "e"]]
    assert [a for a, _ in answers] == [["m1:a", "m1:b"], ["m1:c"], ["m1:d", "m1:e"]]


def test_a_full_batch_does_not_wait_and_a_request_too_big_for_one_pass_is_split():
    passes = []

    async def scenario():
        batcher = MicroBatcher(lambda: "m", lambda m, items, ids: passes.append(list(items)) or list(items),
                               max_batch_size=3, max_wait_ms=10_000)
        batcher.start()
        started = time.monotonic()
        answers = await asyncio.gather(batcher.submit(["a", "b", "c", "d"], ["0", "1", "2", "3"]),
                                       batcher.submit(["e"], ["0"]))
        await batcher.stop()
        return answers, time.monotonic() - started

    answers, seconds = batcher_run(scenario())
    assert passes == [["a", "b", "e"], ["c", "d"]]  # an equal share each first ("a", "e"), then the room left ("b")
    assert [a for a, _ in answers] == [["a", "b", "c", "d"], ["e"]]
    assert seconds < 5  # full passes went at once, not after max_wait_ms (10 s)


def test_a_small_request_rides_in_the_next_pass_while_a_huge_one_is_answered_over_many():
    """Fairness: a pass is bounded in cost, so the small request waits for one pass, not for the huge request."""
    passes, small_answered_after = [], []

    async def scenario():
        batcher = MicroBatcher(lambda: "m", lambda m, items, ids: passes.append(list(items)) or list(items),
                               max_batch_size=64, max_wait_ms=0, max_batch_cost=100)
        batcher.start()
        huge = asyncio.ensure_future(batcher.submit([f"h{i}" for i in range(40)], [str(i) for i in range(40)],
                                                    [10] * 40))
        await asyncio.sleep(0)  # the huge request is queued first
        small, _ = await batcher.submit(["s"], ["0"], [3])
        small_answered_after.append(len(passes))
        big, _ = await huge
        await batcher.stop()
        return small, big

    small, big = batcher_run(scenario())
    assert small == ["s"] and big == [f"h{i}" for i in range(40)]
    assert all(sum(10 if item.startswith("h") else 3 for item in p) <= 100 for p in passes)  # bounded passes
    assert small_answered_after[0] <= 2 and len(passes) >= 4  # after at most two passes of the huge one's ten


def test_a_request_split_over_passes_is_answered_by_one_model_across_a_swap():
    current = {"model": "v1"}

    def run_batch(model, items, ids):
        current["model"] = "v2"  # a swap after the first pass
        return [model] * len(items)

    async def scenario():
        batcher = MicroBatcher(lambda: current["model"], run_batch, max_batch_size=2, max_wait_ms=0)
        batcher.start()
        first = await batcher.submit(["a", "b", "c", "d", "e"], list("01234"))
        second = await batcher.submit(["f"], ["0"])
        await batcher.stop()
        return first, second

    (first, first_model), (second, second_model) = batcher_run(scenario())
    assert (first, first_model) == (["v1"] * 5, "v1")  # all five from the model that took its first items
    assert (second, second_model) == (["v2"], "v2")  # the next request starts on the new one


def test_a_full_queue_refuses_with_a_retry_after_and_a_late_request_is_dropped():
    ran, release = [], threading.Event()

    def run_batch(model, items, ids):
        release.wait(5)
        ran.extend(items)
        return list(items)

    async def scenario():
        batcher = MicroBatcher(lambda: "m", run_batch, max_batch_size=1, max_wait_ms=0, max_queue_cost=3)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(["r"], ["0"]))
        await asyncio.sleep(0.1)  # "r" is in the pass that blocks
        late = asyncio.ensure_future(batcher.submit(["x", "y", "z"], ["0", "1", "2"], timeout_s=0.2))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.submit(["w"], ["0"])  # 3 queued + 1 > 3
        assert batcher.full() and batcher.retry_after() >= 1
        with pytest.raises(TimeoutError):
            await late
        release.set()
        await running
        assert batcher.queued_cost() == 0  # the late request's items left the queue with it
        await batcher.stop()

    batcher_run(scenario())
    assert ran == ["r"]  # what timed out never reached the model


def test_a_batch_uses_the_model_that_was_current_when_it_started():
    current = {"model": "v1"}
    release = threading.Event()

    def run_batch(model, items, ids):
        if items == ["slow"]:
            current["model"] = "v2"  # the swap happens while this batch runs
            release.wait(5)
        return [model] * len(items)

    async def scenario():
        batcher = MicroBatcher(lambda: current["model"], run_batch, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["slow"], ["0"]))
        await asyncio.sleep(0.2)
        release.set()
        second = await batcher.submit(["after"], ["0"])
        result = await first, second
        await batcher.stop()
        return result

    (first, first_model), (second, second_model) = batcher_run(scenario())
    assert (first, first_model) == (["v1"], "v1") and (second, second_model) == (["v2"], "v2")


def test_a_failed_batch_fails_its_requests_and_the_next_batch_runs():
    def run_batch(model, items, ids):
        if "bad" in items:
            raise ValueError("broken input")
        return list(items)

    async def scenario():
        batcher = MicroBatcher(lambda: "m", run_batch, max_batch_size=4, max_wait_ms=0)
        batcher.start()
        with pytest.raises(ValueError, match="broken input"):
            await batcher.submit(["bad"], ["0"])
        answers, _ = await batcher.submit(["good"], ["0"])
        await batcher.stop()
        return answers

    assert batcher_run(scenario()) == ["good"]


# ------------------------------------------------------------------------------- the service, faked models


class FakeRegistry:
    """resolve/download of flows.registry.Registry: the alias points at `version`; `broken` versions fail."""

    def __init__(self, version: int = 1, broken: frozenset[int] = frozenset()):
        self.version, self.broken, self.downloads = version, set(broken), []

    def resolve(self, ref: str) -> tuple[str, int]:
        return ref.partition(":")[0], self.version

    def download(self, name: str, version: int, dest: Path, variant: str | None = None,
                 with_variants: bool = True) -> Path:
        self.downloads.append(version)
        dest.mkdir(parents=True)
        (dest / "version").write_text(str(version))
        (dest / "variant").write_text(str(variant))
        return dest


class FakePredictor:
    kind, answer_kind = "textclass", "classifier"

    def __init__(self, version: str, broken: bool):
        self.version, self.broken = version, broken

    def predict(self, items, ids):
        if self.broken:
            return []  # answers nothing: fails the warm-up
        return [{"id": i, "text": item, "label": f"v{self.version}"} for i, item in zip(ids, items, strict=True)]


def fake_loader(registry: FakeRegistry):
    def load(folder: Path, batch_size: int, max_length):
        version = (folder / "version").read_text()
        return FakePredictor(version, int(version) in registry.broken)
    return load


def service(tmp_path: Path, registry: FakeRegistry, poll_s: float = 0.05, variant: str | None = None,
            **limits):
    metrics = Metrics()
    holder = ModelHolder(ModelSource("sentiment:champion", lambda: registry, tmp_path, variant), metrics, 8, None,
                         poll_s, loader=fake_loader(registry))
    return holder, metrics, create_app(holder, metrics, Limits(max_batch_size=8, max_wait_ms=1, **limits))


def wait_until(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_predict_answers_each_item_with_the_version_that_served_it(tmp_path: Path):
    registry = FakeRegistry(version=1)
    holder, _, app = service(tmp_path, registry)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        response = client.post("/v1/predict", json={"texts": ["good day", "bad day"], "ids": ["a", "b"]})
        assert response.status_code == 200
        body = response.json()
        assert (body["model"], body["version"], response.headers["X-Model-Version"]) == ("sentiment", 1, "1")
        assert body["predictions"] == [{"id": "a", "text": "good day", "label": "v1"},
                                       {"id": "b", "text": "bad day", "label": "v1"}]
        default_ids = client.post("/v1/predict", json={"tokens": [["x", "y"]]}).json()["predictions"]
        assert default_ids[0]["id"] == "0"
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"ready": True, "model": "sentiment", "version": 1,
                                                "variant": None, "kind": "classifier",
                                                "task_kind": "textclass"}


def test_a_served_variant_is_what_is_downloaded_and_what_answers(tmp_path: Path):
    registry = FakeRegistry(version=1)
    holder, _, app = service(tmp_path, registry, variant="onnx-int8")
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        body = client.post("/v1/predict", json={"texts": ["good day"]}).json()
        assert (body["version"], body["variant"]) == (1, "onnx-int8")
        assert (holder.current.folder / "variant").read_text() == "onnx-int8"  # only that variant was fetched


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"texts": ["a"], "tokens": [["a"]]}, 422, "exactly one of 'texts'"),
    ({}, 422, "exactly one of 'texts'"),
    ({"texts": []}, 422, "texts"),
    ({"texts": [""]}, 422, "texts"),
    ({"texts": ["x" * 10_001]}, 422, "at most 10000 characters"),
    ({"texts": ["a"] * (MAX_ITEMS + 1)}, 422, f"at most {MAX_ITEMS} items"),
    ({"tokens": [[]]}, 422, "tokens"),
    ({"tokens": "a b"}, 422, "tokens"),
    ({"texts": ["a", "b"], "ids": ["only-one"]}, 422, "'ids' has 1 entries for 2 items"),
    ({"texts": ["a", "w " * (MAX_WORDS + 1)]}, 422, f"texts[1] has {MAX_WORDS + 1} words; at most {MAX_WORDS}"),
    ({"tokens": [["a"], ["w"] * (MAX_WORDS + 1)]}, 422,
     f'"loc":["body","tokens",1],"msg":"List should have at most {MAX_WORDS} items'),
    ({"tokens": [["x" * 200] * 51]}, 422, "tokens[0] has 10200 characters; at most 10000"),
    ({"texts": ["a"], "model": "other"}, 422, "model"),
])
def test_bad_requests_get_a_4xx_naming_the_field(tmp_path: Path, body: dict, status: int, says: str):
    holder, _, app = service(tmp_path, FakeRegistry())
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        response = client.post("/v1/predict", json=body)
        assert response.status_code == status
        assert says in response.text
        assert '"input"' not in response.text  # the error names the field; it does not echo the request back


def test_a_body_over_the_limit_is_refused_with_or_without_a_length(tmp_path: Path):
    holder, _, app = service(tmp_path, FakeRegistry())
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"

    def chunked():  # no Content-Length: the guard counts what arrives
        for start in range(0, len(body), 65_536):
            yield body[start:start + 65_536]

    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        for content in (body, chunked()):
            response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
            assert response.status_code == 413 and "request body over" in response.json()["detail"]
        small = b'{"texts": ["under the limit"]}'
        streamed = client.post("/v1/predict", content=iter([small[:10], small[10:]]),
                               headers={"content-type": "application/json"})
        assert streamed.status_code == 200 and streamed.json()["predictions"][0]["text"] == "under the limit"


TOKEN = "s3cret-token-0123456789"


def test_with_a_token_every_path_but_the_probes_needs_it(tmp_path: Path):
    holder, _, app = service(tmp_path, FakeRegistry(), token=TOKEN)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            for method, path in (("post", "/v1/predict"), ("get", "/metrics"), ("get", "/docs")):
                response = client.request(method, path, json={"texts": ["a"]}, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["WWW-Authenticate"] == "Bearer" and TOKEN not in response.text
        good = client.post("/v1/predict", json={"texts": ["a"]}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200


def test_serve_off_loopback_refuses_to_start_without_a_good_token(tmp_path: Path, monkeypatch):
    from flows.serving.guards import TOKEN_ENV, TokenError, read_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None, "127.0.0.1") is None and read_token(None, "::1") is None  # loopback: optional
    with pytest.raises(TokenError, match="--host 0.0.0.0 offers the service to the network: give it a token"):
        read_token(None, "0.0.0.0")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(TokenError, match="has 3 characters; use at least 16"):
        read_token(str(short), "0.0.0.0")
    with pytest.raises(TokenError, match="cannot read --token-file"):
        read_token(str(tmp_path / "missing"), "0.0.0.0")
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token(str(good), "0.0.0.0") == TOKEN
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert read_token(None, "10.0.0.5") == TOKEN


def test_overload_is_429_with_retry_after_and_a_late_answer_503(tmp_path: Path):
    holder, metrics, app = service(tmp_path, FakeRegistry(), max_queue_words=4, timeout_s=1.0)
    entered, release = threading.Event(), threading.Event()
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        predictor = holder.current.predictor
        answer = predictor.predict
        predictor.predict = lambda items, ids: entered.set() or release.wait(10) and answer(items, ids)
        replies = {}

        def send(name, texts):
            replies[name] = client.post("/v1/predict", json={"texts": texts})

        first = threading.Thread(target=send, args=("first", ["one two three"]))
        first.start()
        assert entered.wait(10)  # "first" is in the pass that blocks: no longer queued
        second = threading.Thread(target=send, args=("second", ["a b c d"]))
        second.start()
        wait_until(lambda: holder_queued(metrics) == 4)
        third = client.post("/v1/predict", json={"texts": ["e"]})  # 4 queued + 1 > 4
        assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 1
        second.join()
        assert replies["second"].status_code == 503 and "not answered within 1 s" in replies["second"].text
        release.set()
        first.join()
        assert replies["first"].status_code == 503  # it waited on the blocked pass past its deadline too
        assert holder_queued(metrics) == 0  # the late request's words left the queue with it
        text = client.get("/metrics").text
    assert 'flowtune_serve_requests_total{status="429"} 1.0' in text
    assert 'flowtune_serve_requests_total{status="503"} 2.0' in text


def holder_queued(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("flowtune_serve_queued_words")


def test_a_failed_prediction_answers_500_without_the_exception_text(tmp_path: Path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("flowtune.serve"), "disabled", False)
    holder, _, app = service(tmp_path, FakeRegistry())
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)

        def boom(items, ids):
            raise RuntimeError("secret path /home/me/.aws/credentials")
        holder.current.predictor.predict = boom
        response = client.post("/v1/predict", json={"texts": ["a"]})
    assert response.status_code == 500
    assert "secret" not in response.text and "RuntimeError" not in response.text
    error_id = response.json()["detail"].split("error ")[1].split()[0]
    assert f"prediction failed (error {error_id})" in caplog.text and "secret path" in caplog.text


def test_not_ready_until_a_model_is_loaded(tmp_path: Path):
    registry = FakeRegistry()
    holder, metrics, app = service(tmp_path, registry)
    gate = threading.Event()
    loader = holder.loader
    holder.loader = lambda *args: gate.wait(10) and loader(*args)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 503
        gate.set()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        metrics_text = client.get("/metrics").text
    assert 'flowtune_serve_requests_total{status="503"} 1.0' in metrics_text
    assert 'flowtune_serve_model_version{model="sentiment"} 1.0' in metrics_text


def test_a_new_version_is_swapped_in_and_a_broken_one_leaves_the_old_serving(tmp_path: Path):
    registry = FakeRegistry(version=1, broken=frozenset({3}))
    holder, metrics, app = service(tmp_path, registry)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        registry.version = 2
        wait_until(lambda: client.post("/v1/predict", json={"texts": ["a"]}).json()["version"] == 2)
        assert not (tmp_path / "sentiment-v1").exists()  # the old files go once the new model serves
        registry.version = 3  # fails its warm-up
        wait_until(lambda: 3 in registry.downloads)
        time.sleep(0.3)  # several polls: not retried while the alias stays on it
        assert registry.downloads.count(3) == 1
        answer = client.post("/v1/predict", json={"texts": ["a"]}).json()
        assert answer["version"] == 2 and answer["predictions"][0]["label"] == "v2"
        assert client.get("/readyz").json()["version"] == 2
        assert not (tmp_path / "sentiment-v3").exists()
        text = client.get("/metrics").text
        assert "flowtune_serve_failed_version 3.0" in text
        assert 'flowtune_serve_reloads_total{outcome="failed"} 1.0' in text
        assert 'flowtune_serve_reloads_total{outcome="loaded"} 2.0' in text
        registry.version = 4  # the alias moves on: a good version is taken again
        wait_until(lambda: client.get("/readyz").json()["version"] == 4)
        assert "flowtune_serve_failed_version 0.0" in client.get("/metrics").text


class StorageBlink(ConnectionError):
    pass


def test_a_download_that_fails_for_a_passing_reason_is_retried_and_a_bad_checksum_is_not(tmp_path: Path):
    from flows.registry import RegistryError

    registry = FakeRegistry(version=1)
    download, failures = registry.download, {"count": 2}

    def flaky(name, version, dest, **kwargs):
        if version == 2 and failures["count"]:
            failures["count"] -= 1
            raise StorageBlink("connection reset")
        if version == 3:
            raise RegistryError("sentiment v3: checksum mismatch for model.safetensors")
        return download(name, version, dest, **kwargs)
    registry.download = flaky
    holder, metrics, app = service(tmp_path, registry, poll_s=0.05)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        registry.version = 2
        wait_until(lambda: client.get("/readyz").json()["version"] == 2)  # after two passing failures
        assert 'flowtune_serve_reloads_total{outcome="retrying"} 2.0' in client.get("/metrics").text
        registry.version = 3
        wait_until(lambda: holder.failed == ("sentiment", 3))
        time.sleep(0.3)
        assert holder.failed == ("sentiment", 3) and client.get("/readyz").json()["version"] == 2
        assert 'flowtune_serve_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_retries_back_off():
    from flows.serving.app import Retry

    holder = ModelHolder(ModelSource("m:champion", lambda: None, Path("."), None), Metrics(), 8, None, poll_s=2)
    delays = []
    for _ in range(10):
        holder._failed_to_load(("m", 2), StorageBlink("down"))
        delays.append(round(holder.retry.at - time.monotonic()))
    assert delays[:4] == [2, 4, 8, 16] and delays[-1] == 300  # doubling, capped
    assert isinstance(holder.retry, Retry) and holder.retry.waits(("m", 2)) and not holder.retry.waits(("m", 3))


def test_healthz_turns_503_when_no_model_has_loaded_for_too_long(tmp_path: Path):
    registry = FakeRegistry()
    registry.resolve = lambda ref: (_ for _ in ()).throw(ConnectionError("storage down"))
    holder, _, app = service(tmp_path, registry, max_unready_s=0.5)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        wait_until(lambda: client.get("/healthz").status_code == 503)
        assert "no model loaded in" in client.get("/healthz").json()["status"]


@pytest.mark.parametrize(("error", "transient"), [
    (ConnectionError("reset"), True),
    (TimeoutError(), True),
    ("endpoint", True),
    ("503", True),
    ("SlowDown", True),
    ("404", False),
    ("AccessDenied", False),
    ("checksum", False),
])
def test_which_storage_failures_are_worth_retrying(error, transient):
    from botocore.exceptions import ClientError, EndpointConnectionError

    from flows.ops.storage import is_transient
    from flows.registry import RegistryError

    if error == "endpoint":
        error = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    elif error == "checksum":
        error = RegistryError("checksum mismatch")
    elif isinstance(error, str):
        status = int(error) if error.isdigit() else (503 if error == "SlowDown" else 403)
        error = ClientError({"Error": {"Code": error}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
    assert is_transient(error) is transient


def test_storage_down_keeps_the_model_serving(tmp_path: Path, caplog, monkeypatch):
    # Prefect's logging set-up (imported by other tests in this process) disables loggers that exist already
    monkeypatch.setattr(logging.getLogger("flowtune.serve"), "disabled", False)
    caplog.set_level(logging.WARNING, logger="flowtune.serve")
    registry = FakeRegistry()
    holder, _, app = service(tmp_path, registry)
    attempts = []
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)

        def down(ref):
            attempts.append(ref)
            raise ConnectionError("endpoint unreachable")
        registry.resolve = down
        wait_until(lambda: len(attempts) >= 3)  # polled again and again: still down
        assert client.post("/v1/predict", json={"texts": ["a"]}).json()["version"] == 1
        assert client.get("/readyz").status_code == 200
    assert "cannot resolve sentiment:champion: endpoint unreachable; still serving sentiment v1" in caplog.text


# ------------------------------------------------------------------------ the real predictors, tiny models


def saved(base: Path, folder: Path, model_class: str, labels: list[str]) -> Path:
    import transformers

    model = getattr(transformers, model_class).from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def test_a_classifier_folder_answers_in_predicts_jsonl_shape(tiny_base: Path, tmp_path: Path):
    from flows.serving.predictors import load_predictor

    labels = ["negative", "neutral", "positive"]
    predictor = load_predictor(saved(tiny_base, tmp_path / "c", "AutoModelForSequenceClassification", labels), 4)
    assert (predictor.kind, predictor.answer_kind) == ("textclass", "classifier")
    answers = predictor.predict(["a good day", ["a", "bad", "day"]], ["t1", "t2"])
    assert [a["id"] for a in answers] == ["t1", "t2"] and answers[1]["text"] == "a bad day"
    for answer in answers:
        assert set(answer) == {"id", "text", "label", "probabilities"} and answer["label"] in labels
        assert list(answer["probabilities"]) == labels and abs(sum(answer["probabilities"].values()) - 1) < 1e-3


def test_a_tagger_folder_answers_one_tag_per_token(tiny_base: Path, tmp_path: Path):
    from flows.serving.predictors import load_predictor

    labels = ["O", "B-person", "I-person"]
    predictor = load_predictor(saved(tiny_base, tmp_path / "t", "AutoModelForTokenClassification", labels), 4)
    assert (predictor.kind, predictor.answer_kind) == ("ner", "tagger")
    answers = predictor.predict(["Alice met  Bob", ["New York", "!"]], ["0", "1"])
    assert [a["tokens"] for a in answers] == [["Alice", "met", "Bob"], ["New York", "!"]]
    assert all(len(a["tags"]) == len(a["tokens"]) and set(a["tags"]) <= set(labels) for a in answers)
