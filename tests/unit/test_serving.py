"""`flowtune serve` without a model: micro-batching, request limits, readiness, metrics and the hot swap's
rules, with a fake registry and fake predictors (tests/integration/test_serve.py runs the real thing)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flows.serving.app import MAX_BODY_BYTES, MAX_ITEMS, Metrics, ModelHolder, ModelSource, create_app
from flows.serving.batcher import MicroBatcher

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


def test_a_request_is_never_split_and_a_full_batch_does_not_wait():
    passes = []

    async def scenario():
        batcher = MicroBatcher(lambda: "m", lambda m, items, ids: passes.append(list(items)) or list(items),
                               max_batch_size=3, max_wait_ms=10_000)
        batcher.start()
        started = time.monotonic()
        answers = await asyncio.gather(batcher.submit(["a", "b"], ["0", "1"]), batcher.submit(["c", "d"], ["0", "1"]),
                                       batcher.submit(["e"], ["0"]))
        await batcher.stop()
        return answers, time.monotonic() - started

    answers, seconds = batcher_run(scenario())
    assert passes == [["a", "b"], ["c", "d", "e"]]  # "c, d" did not fit beside "a, b": the next batch's first
    assert [a for a, _ in answers] == [["a", "b"], ["c", "d"], ["e"]]
    assert seconds < 5  # full batches went at once, not after max_wait_ms (10 s)


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
    """resolve/download of tasks.registry.Registry: the alias points at `version`; `broken` versions fail."""

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
    kind = "classifier"

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


def service(tmp_path: Path, registry: FakeRegistry, poll_s: float = 0.05, variant: str | None = None):
    metrics = Metrics()
    holder = ModelHolder(ModelSource("sentiment:champion", lambda: registry, tmp_path, variant), metrics, 8, None,
                         poll_s, loader=fake_loader(registry))
    return holder, metrics, create_app(holder, metrics, max_batch_size=8, max_wait_ms=1)


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
                                                "variant": None, "kind": "classifier"}


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
    ({"texts": ["a"], "model": "other"}, 422, "model"),
])
def test_bad_requests_get_a_4xx_naming_the_field(tmp_path: Path, body: dict, status: int, says: str):
    holder, _, app = service(tmp_path, FakeRegistry())
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        response = client.post("/v1/predict", json=body)
        assert response.status_code == status
        assert says in response.text


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path):
    holder, _, app = service(tmp_path, FakeRegistry())
    with TestClient(app) as client:
        response = client.post("/v1/predict", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                               headers={"content-type": "application/json"})
        assert response.status_code == 413 and "request body over" in response.json()["detail"]


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
    assert predictor.kind == "classifier"
    answers = predictor.predict(["a good day", ["a", "bad", "day"]], ["t1", "t2"])
    assert [a["id"] for a in answers] == ["t1", "t2"] and answers[1]["text"] == "a bad day"
    for answer in answers:
        assert set(answer) == {"id", "text", "label", "probabilities"} and answer["label"] in labels
        assert list(answer["probabilities"]) == labels and abs(sum(answer["probabilities"].values()) - 1) < 1e-3


def test_a_tagger_folder_answers_one_tag_per_token(tiny_base: Path, tmp_path: Path):
    from flows.serving.predictors import load_predictor

    labels = ["O", "B-person", "I-person"]
    predictor = load_predictor(saved(tiny_base, tmp_path / "t", "AutoModelForTokenClassification", labels), 4)
    assert predictor.kind == "tagger"
    answers = predictor.predict(["Alice met  Bob", ["New York", "!"]], ["0", "1"])
    assert [a["tokens"] for a in answers] == [["Alice", "met", "Bob"], ["New York", "!"]]
    assert all(len(a["tags"]) == len(a["tokens"]) and set(a["tags"]) <= set(labels) for a in answers)
