"""`flowtune serve`: a registered model (or a model folder) behind HTTP, with micro-batching and hot swap.

- POST /v1/predict `{"texts": [...]}` or `{"tokens": [[...], ...]}` (optional `ids`): answers in the
  shapes of `flowtune predict --format jsonl`, with the model name and version that answered.
- GET /healthz (the process answers), /readyz (a model is loaded), /metrics (Prometheus), /docs (OpenAPI).
- Hot swap: a thread polls the alias; a new version is downloaded (checksums verified), loaded and warmed
  up next to the serving one, then replaces it in one assignment. Requests already batched finish on the
  old model; a version that fails to load or to answer leaves the old one serving, and says why in the
  log and in /metrics. A download that fails for a passing reason (storage unreachable, a timeout, a 5xx)
  is tried again with backoff; a checksum, load or warm-up failure is not, until the alias moves.
- Safe to expose (docs/SECURITY.md): a bearer token whenever the address is not loopback (guards.py);
  bounded work per text, per request, per forward pass and in the queue (429 with Retry-After when full,
  503 when a request outlives its deadline); fair shares between clients (batcher.py); a 500 never
  carries the exception's text; /healthz turns 503 when no model has loaded for `max_unready_s`, so an
  orchestrator restarts the process; SIGTERM drains for `grace_s`, then exits.
"""

from __future__ import annotations  # FastAPI resolves the endpoints' annotations from this module's globals

import asyncio
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from flows.serving.batcher import MicroBatcher, Overloaded
from flows.serving.capture import Capture, CaptureConfig, open_capture
from flows.serving.guards import BearerToken, BodyLimit
from flows.serving.limits import (
    BODY_READ_S,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_ITEMS,
    MAX_READING_BYTES,
    MAX_TEXT_CHARS,
    MAX_TOKEN_CHARS,
    MAX_TOKENS,
    MAX_WORDS,
    Limits,
)
from flows.serving.predictors import Predictor, load_predictor

log = logging.getLogger("flowtune.serve")

DEFAULT_LIMITS = Limits()
WARM_UP = ["flowtune", "warm", "up"]  # one sentence every new model must answer before it serves

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOKEN_CHARS)]


class PredictRequest(BaseModel):
    """Exactly one of `texts` (strings; a tagger splits them at whitespace) or `tokens` (pre-split sentences;
    a classifier joins them with spaces); `ids`, when given, one per item, are echoed in the answers."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Text] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS,
                                     description=f"texts, at most {MAX_WORDS} words and {MAX_TEXT_CHARS} characters "
                                                 "each")
    tokens: list[Annotated[list[Token], Field(min_length=1, max_length=MAX_TOKENS)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ITEMS, description="pre-split sentences, a list of tokens each")
    ids: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, description="one id per item, echoed in its answer (default: the item's index)")
    _words: list[int] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _one_kind_of_input(self) -> PredictRequest:
        if (self.texts is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'texts' (a list of strings) or 'tokens' (a list of token lists)")
        if self.ids is not None and len(self.ids) != len(self.items):
            raise ValueError(f"'ids' has {len(self.ids)} entries for {len(self.items)} items: one id per item")
        self._check_sizes()
        return self

    def _check_sizes(self) -> None:
        """The model's work grows with words and characters: each item is held to the caps, by its field.
        The word counts are kept: they are what each item costs the batcher."""
        field = "texts" if self.texts is not None else "tokens"
        self._words = [word_count(item) for item in self.items]
        for index, (item, words) in enumerate(zip(self.items, self._words, strict=True)):
            if words > MAX_WORDS:
                raise ValueError(f"{field}[{index}] has {words} words; at most {MAX_WORDS} per item (split it)")
            if field == "tokens" and (chars := sum(map(len, item))) > MAX_TEXT_CHARS:
                raise ValueError(f"tokens[{index}] has {chars} characters; at most {MAX_TEXT_CHARS} per sentence")

    @property
    def items(self) -> list:
        return self.texts if self.texts is not None else self.tokens

    @property
    def costs(self) -> list[int]:
        return [max(1, words) for words in self._words]


def word_count(item: str | list[str]) -> int:
    """What an item costs the model, in words: a tagger splits a text at whitespace, as here."""
    return len(item.split()) if isinstance(item, str) else len(item)


class PredictResponse(BaseModel):
    model: str = Field(description="the registered model (or model folder) that answered")
    version: int | None = Field(description="its version (also in the X-Model-Version header); null for a folder")
    variant: str | None = Field(default=None, description="the compressed variant that answered (null: fp32)")
    predictions: list[dict] = Field(description="one per item, in the shapes of `flowtune predict --format jsonl`")


@dataclass(frozen=True)
class Served:
    """One loaded model; replaced whole on a swap, never changed."""

    name: str
    version: int | None
    predictor: Predictor
    folder: Path | None  # the downloaded files (removed once another version serves)


class ModelSource:
    """Where the served model comes from: a registry reference (NAME, NAME@VERSION or NAME:ALIAS, watched)
    or a model folder (loaded once); with `variant`, that compressed variant of it (a new version that has
    no such variant fails to load, and the one serving stays)."""

    def __init__(self, ref: str, registry_factory: Callable[[], object], work_dir: Path, variant: str | None = None):
        self.ref, self.folder = ref, Path(ref) if Path(ref).is_dir() else None
        self._registry_factory, self._registry, self.work_dir = registry_factory, None, work_dir
        self.variant = variant

    @property
    def watched(self) -> bool:
        return self.folder is None

    def registry(self):
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    def target(self) -> tuple[str, int | None]:
        """What should serve now: (name, version) of the reference, or (folder, None)."""
        if self.folder is not None:
            return str(self.folder), None
        return self.registry().resolve(self.ref)

    def fetch(self, name: str, version: int | None) -> Path:
        """The model's files: a registry version downloaded and verified, or the folder itself."""
        from flows.registry import local_variant

        if version is None:
            return local_variant(Path(name), self.variant)
        return self.registry().download(name, version, self.work_dir / f"{name}-v{version}", variant=self.variant,
                                        with_variants=False)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("flowtune_serve_requests", "Predict requests by HTTP status", ["status"],
                                registry=self.registry)
        self.latency = Histogram("flowtune_serve_request_seconds", "Predict request latency (queue + model)",
                                 registry=self.registry)
        self.batch_items = Histogram("flowtune_serve_batch_items", "Items per forward pass (micro-batch size)",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=self.registry)
        self.version = Gauge("flowtune_serve_model_version", "Version of the model that serves (0: a folder)",
                             ["model"], registry=self.registry)
        self.reloads = Counter("flowtune_serve_reloads", "Model loads by outcome (loaded, failed)", ["outcome"],
                               registry=self.registry)
        self.queued_words = Gauge("flowtune_serve_queued_words", "Words waiting for a forward pass",
                                  registry=self.registry)
        self.failed_version = Gauge("flowtune_serve_failed_version",
                                    "Last version that failed to load or verify (0: none)", registry=self.registry)
        # capture.py (0 while capture is off): items dropped by reason, items written, items waiting
        self.capture_dropped = Counter("flowtune_capture_dropped", "Captured items dropped (buffer_full, storage)",
                                       ["reason"], registry=self.registry)
        for reason in ("buffer_full", "storage"):
            self.capture_dropped.labels(reason)
        self.capture_written = Counter("flowtune_capture_written", "Captured items written to object storage",
                                       registry=self.registry)
        self.capture_buffer_items = Gauge("flowtune_capture_buffer_items", "Captured items waiting to be written",
                                          registry=self.registry)


MAX_BACKOFF_S = 300.0


class ModelHolder:
    """The serving model and the thread that keeps it in step with the reference."""

    def __init__(self, source: ModelSource, metrics: Metrics, batch_size: int, max_length: int | None,
                 poll_s: float, loader: Callable[[Path, int, int | None], Predictor] = load_predictor):
        self.source, self.metrics, self.loader = source, metrics, loader
        self.batch_size, self.max_length, self.poll_s = batch_size, max_length, poll_s
        self.current: Served | None = None
        self.failed: tuple[str, int | None] | None = None  # not retried until the reference moves again
        self.retry: Retry | None = None  # a passing failure: when to try its target again
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="flowtune-serve-watch", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=1)  # a daemon: a download in progress must not hold up the exit

    def unready_for(self) -> float:
        """Seconds without a model since the start (0 once one serves)."""
        return 0.0 if self.current is not None else time.monotonic() - self.started

    def _watch(self) -> None:
        while not self.stopping.is_set():
            self.refresh()
            if not self.source.watched and self.current is not None:
                return  # a folder does not change
            self.stopping.wait(self.poll_s)

    def refresh(self) -> None:
        """Load what the reference points at now, if it is new; any failure keeps the current model."""
        try:
            target = self.source.target()
        except Exception as exc:  # noqa: BLE001 - storage down: keep serving, try again next poll
            log.warning("cannot resolve %s: %s; still serving %s", self.source.ref, exc, self.describe())
            return
        if target in {self.failed, self.serving()} or (self.retry and self.retry.waits(target)):
            return
        try:
            served = self.load(*target)
        except Exception as exc:  # noqa: BLE001 - a bad version must not stop the service
            self._failed_to_load(target, exc)
            return
        self.swap(served)

    def _failed_to_load(self, target: tuple[str, int | None], exc: Exception) -> None:
        from flows.ops.storage import is_transient  # botocore: only serving from a registry needs it

        if is_transient(exc):  # storage blinked: this version is tried again, later and later
            attempts = self.retry.attempts + 1 if self.retry and self.retry.target == target else 1
            delay = min(MAX_BACKOFF_S, self.poll_s * 2 ** (attempts - 1))
            self.retry = Retry(target, attempts, time.monotonic() + delay)
            self.metrics.reloads.labels("retrying").inc()
            log.warning("version %s of %s could not be fetched (%s: %s); trying again in %.0f s; still serving %s",
                        target[1], target[0], type(exc).__name__, exc, delay, self.describe())
            return
        self.failed, self.retry = target, None
        self.metrics.reloads.labels("failed").inc()
        self.metrics.failed_version.set(target[1] or 0)
        log.error("version %s of %s failed to load or verify: %s; still serving %s", target[1], target[0],
                  exc, self.describe())

    def load(self, name: str, version: int | None) -> Served:
        started = time.monotonic()
        folder = self.source.fetch(name, version)
        try:
            predictor = self.loader(folder, self.batch_size, self.max_length)
            answers = predictor.predict([WARM_UP], ["warm-up"])
            if len(answers) != 1 or answers[0].get("id") != "warm-up":
                raise ValueError(f"warm-up prediction malformed: {answers!r}"[:300])
        except Exception:
            if version is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("loaded %s v%s (%s) in %.1f s", name, version, predictor.kind, time.monotonic() - started)
        return Served(name, version, predictor, folder if version is not None else None)

    def swap(self, served: Served) -> None:
        old, self.current = self.current, served  # one assignment: the next batch uses the new model
        self.failed = self.retry = None
        self.metrics.failed_version.set(0)
        self.metrics.reloads.labels("loaded").inc()
        self.metrics.version.clear()
        self.metrics.version.labels(served.name).set(served.version or 0)
        log.info("now serving %s (was %s)", self.describe(), "nothing" if old is None else f"v{old.version}")
        if old is not None and old.folder is not None:
            shutil.rmtree(old.folder, ignore_errors=True)  # loaded in memory; batches in flight keep their model

    def serving(self) -> tuple[str, int | None] | None:
        current = self.current
        return None if current is None else (current.name, current.version)

    def describe(self) -> str:
        current = self.current
        return "nothing" if current is None else f"{current.name} v{current.version}"


@dataclass(frozen=True)
class Retry:
    target: tuple[str, int | None]
    attempts: int
    at: float  # time.monotonic() of the next attempt

    def waits(self, target: tuple[str, int | None]) -> bool:
        return target == self.target and time.monotonic() < self.at


def run_batch(served: Served | None, items: list, ids: list) -> list[dict]:
    if served is None:
        raise LookupError("no model is loaded yet")
    return served.predictor.predict(items, ids)


def create_app(holder: ModelHolder, metrics: Metrics, limits: Limits = DEFAULT_LIMITS, capture: Capture | None = None):
    """The service; with `capture`, every answered request's items are handed to it (capture.py)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    batcher = MicroBatcher(lambda: holder.current, run_batch, limits.max_batch_size, limits.max_wait_ms,
                           limits.max_batch_words, limits.max_queue_words, on_batch=metrics.batch_items.observe)
    metrics.queued_words.set_function(batcher.queued_cost)
    # Bodies are read within a budget of bytes and parsed in threads of their own: a megabyte takes tens of
    # milliseconds, and a hundred of them at once must not keep the event loop (and so /healthz) from answering.
    parser, reading = ThreadPoolExecutor(2, thread_name_prefix="flowtune-serve-parse"), Budget(MAX_READING_BYTES)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        holder.start()
        if capture is not None:
            capture.start()
        yield
        holder.stop()
        await batcher.stop()
        parser.shutdown(wait=False, cancel_futures=True)
        if capture is not None:  # after the last answer: what it captured is written too (within grace_s)
            await asyncio.to_thread(capture.close)

    app = FastAPI(title="flowtune serve", lifespan=lifespan,
                  description="Predictions of a registered flowtune model (NER tagger or text classifier).")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, without echoing the input back (it may be a megabyte).
        errors = [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in exc.errors()]
        metrics.requests.labels("422").inc()
        return JSONResponse({"detail": errors}, status_code=422)

    def overloaded() -> HTTPException:  # before the body is read, or when the batcher refuses it
        return refused(metrics, 429, "too much work queued; retry later", batcher.retry_after())

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=REQUEST_SCHEMA, responses=PREDICT_ERRORS,
              summary="Predict: tags per token (NER) or labels with probabilities (classifier)")
    async def predict(http: Request, response: Response) -> PredictResponse:
        started = time.perf_counter()
        if holder.current is None:
            raise refused(metrics, 503, "no model is loaded yet; see /readyz")
        size = int(http.headers.get("content-length") or MAX_BODY_BYTES)  # chunked: BodyLimit holds it to that
        if batcher.full() or not reading.admits(size):  # a flood is refused before its bodies are even read
            raise overloaded()
        with reading.holding(size):
            try:
                body = await asyncio.wait_for(http.body(), BODY_READ_S)  # a slow sender holds its share no longer
            except TimeoutError:
                raise refused(metrics, 408, f"request body not received within {BODY_READ_S} s") from None
            request = await parse(parser, body)
        ids = request.ids or [str(i) for i in range(len(request.items))]
        try:
            answers, served = await batcher.submit(request.items, ids, request.costs, limits.timeout_s)
        except Overloaded:
            raise overloaded() from None
        except TimeoutError:
            raise refused(metrics, 503, f"not answered within {limits.timeout_s:g} s (the service is busy); send "
                                        "fewer or shorter items, or retry later", 1) from None
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            log.exception("prediction failed (error %s)", error_id)  # the cause stays in the log, never the reply
            raise refused(metrics, 500, f"prediction failed (error {error_id} in the server log)") from exc
        metrics.requests.labels("200").inc()
        latency = time.perf_counter() - started
        metrics.latency.observe(latency)
        response.headers["X-Model-Version"] = str(served.version)
        if capture is not None:
            response.headers["X-Request-Id"] = hand_over(capture, served, request.items, answers, latency)
        return PredictResponse(model=served.name, version=served.version, variant=holder.source.variant,
                               predictions=answers)

    @app.get("/healthz", responses=HEALTHZ_ERRORS, summary="Liveness: the process answers")
    async def healthz(response: Response) -> dict:  # in the event loop: no thread to wait for
        unready = holder.unready_for()
        if unready > limits.max_unready_s:  # an orchestrator's liveness probe restarts the process
            response.status_code = 503
            return {"status": f"no model loaded in {math.floor(unready)} s (limit {limits.max_unready_s:g} s)"}
        return {"status": "ok"}

    @app.get("/readyz", responses=READYZ_ERRORS, summary="Readiness: a model is loaded and warmed up")
    async def readyz(response: Response) -> dict:
        current = holder.current
        if current is None:
            response.status_code = 503
            return {"ready": False, "model": holder.source.ref, "version": None}
        return {"ready": True, "model": current.name, "version": current.version, "variant": holder.source.variant,
                "kind": current.predictor.answer_kind, "task_kind": current.predictor.kind}

    @app.get("/metrics", responses=UNAUTHORIZED,
             summary="Prometheus metrics: requests by status, latency, batch sizes, the serving version")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    guarded = BodyLimit(app, MAX_BODY_BYTES, f"send at most {MAX_ITEMS} items per request")
    return BearerToken(guarded, limits.token) if limits.token else guarded


def hand_over(capture: Capture, served: Served, items: list, answers: list[dict], latency_s: float) -> str:
    """Give an answered request to the capture; its id (the records' `request`). Never fails the request."""
    request_id = uuid.uuid4().hex
    try:
        capture.add(served, request_id, latency_s * 1000, items, answers)
    except Exception:  # a bug in the capture costs its record, never the answer
        log.exception("capture: request %s not captured", request_id)
    return request_id


class Budget:
    """Bytes of request bodies being read or parsed, with a cap; used from the event loop only, so it needs no lock.
    One body is always admitted when nothing else is parsed."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def admits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    @contextmanager
    def holding(self, size: int) -> Iterator[None]:
        self.used += size
        try:
            yield
        finally:
            self.used -= size


# The answers other than 200, for the OpenAPI schema (/docs, and the site's HTTP reference). 401 and 413 come from
# the guards around the app (guards.py), the rest from the endpoints.
UNAUTHORIZED = {401: {"description": "a token is required (serve listens off loopback) and the request's "
                                     "`Authorization: Bearer <token>` is missing or wrong"}}
PREDICT_ERRORS = {
    **UNAUTHORIZED,
    408: {"description": f"the request body did not arrive within {BODY_READ_S} s"},
    413: {"description": f"the body is over {MAX_BODY_BYTES} bytes"},
    422: {"description": f"a malformed body, or an item over a limit ({MAX_ITEMS} items, {MAX_WORDS} words or tokens "
                         f"and {MAX_TEXT_CHARS} characters per item); `detail` names the field"},
    429: {"description": "too much work queued (`--max-queue-words`); `Retry-After` says when to try again"},
    500: {"description": "the prediction failed; the answer carries an error id, the cause is in the server log"},
    503: {"description": "no model is loaded yet, or the request was not answered within `--timeout-s`"},
}
HEALTHZ_ERRORS = {503: {"description": "no model has loaded for `--max-unready-s`: restart the process"}}
READYZ_ERRORS = {503: {"description": "no model is loaded yet (starting, or every version so far failed to load)"}}

REQUEST_SCHEMA = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


async def parse(pool: ThreadPoolExecutor, body: bytes) -> PredictRequest:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, PredictRequest.model_validate_json, body)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


def refused(metrics: Metrics, status: int, detail: str, retry_after_s: int | None = None) -> HTTPException:
    metrics.requests.labels(str(status)).inc()
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    return HTTPException(status, detail, headers=headers)


def serve(ref: str, host: str, port: int, poll_s: float, max_length: int | None,
          registry_factory: Callable[[], object], variant: str | None = None, limits: Limits = DEFAULT_LIMITS,
          grace_s: float = 10.0, capture: CaptureConfig | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="flowtune-serve-") as work:
        metrics = Metrics()
        source = ModelSource(ref, registry_factory, Path(work), variant)
        holder = ModelHolder(source, metrics, limits.max_batch_size, max_length, poll_s)
        if capture is not None:
            log.info("capturing %g of answered items%s to s3://%s (a batch per %d items or %g s; at most %d wait)",
                     capture.sample, " (redacted: statistics only)" if capture.redact else "", capture.bucket,
                     capture.flush_items, capture.flush_s, capture.max_buffer_items)
        app = create_app(holder, metrics, limits, open_capture(capture, metrics) if capture else None)
        # SIGTERM: stop accepting, let requests in progress finish for grace_s, cancel the rest, exit.
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=grace_s,
                    limit_concurrency=MAX_CONNECTIONS)
