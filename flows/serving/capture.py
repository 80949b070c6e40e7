"""Capture: what `flowtune serve --capture` answered, written to object storage for the loop's monitor.

Each answered request's items (a `sample` of them, drawn per item) are queued in memory; ONE background
thread writes them as gzip JSONL objects at `s3://<bucket>/<model>/<yyyy-mm-dd>/<HH>-<12 hex>.jsonl.gz`
(UTC, the hour of the items' answers), one line per item:

    {"ts", "model", "version", "kind", "request", "latency_ms", "input", "output", "stats"}

`stats` is the predictor's `describe(items, answers)` (lengths, unknown pieces, character classes,
confidence, predicted labels), computed in that thread, never on the request path; `redact` drops `input`
and `output` and keeps `stats`.

Never slows or fails a request: `add` only appends to a deque under a lock held for microseconds. The buffer
is bounded: an item that would pass `max_buffer_items` is dropped and counted (`buffer_full`). A batch is
written once `flush_items` wait or the oldest has waited `flush_s`. A write that fails for a passing reason
(`flows.ops.storage.is_transient`) stays in the buffer for the next flush, newest first, while the buffer keeps
room for one batch of new items beside it; otherwise, and on any other failure, its items are dropped and
counted (`storage`), so a long outage drops the oldest items rather than the new traffic. In memory at most
`max_buffer_items` wait plus the batch being written. `close` writes what is left within its time budget.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("flowtune.serve.capture")

DROP_REASONS = ("buffer_full", "storage")


@dataclass(frozen=True)
class CaptureConfig:
    """`serve.capture` of the params file, with the command line's overrides and the bucket resolved."""

    bucket: str
    sample: float = 1.0
    redact: bool = False
    max_buffer_items: int = 10_000
    flush_items: int = 1_000
    flush_s: float = 60.0
    close_s: float = 10.0  # how long `close` may spend writing what is left (serve's --grace-s)


@dataclass(eq=False)
class Entry:
    """One answered request's captured items (already sampled)."""

    served: Any  # flows.serving.app.Served: name, version, predictor
    request: str
    latency_ms: float
    at: float  # time.time() of the answer
    items: list
    answers: list


@dataclass(eq=False)
class Batch:
    """One object to write: its key is fixed on the first try, so a retry after a lost reply overwrites it."""

    key: str
    lines: list[bytes]
    at: float = field(default_factory=time.monotonic)


class Store:
    """Where batches go: one PUT per object, in the capture bucket."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/gzip")

    def check(self) -> None:
        """HEAD the bucket; a refusal is no verdict (serve's own user may PUT there, not list: compose, k8s)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"403", "AccessDenied"}:
                raise


class Capture:
    """The buffer and its writer thread. `metrics` has `capture_dropped` (a Counter labelled by reason),
    `capture_written` (a Counter) and `capture_buffer_items` (a Gauge)."""

    def __init__(self, config: CaptureConfig, store, metrics, draw: Callable[[], float] = random.random,
                 now: Callable[[], float] = time.time):
        self.config, self.store, self.metrics, self.draw, self.now = config, store, metrics, draw, now
        self.lock = threading.Lock()
        self.queue: deque[Entry] = deque()
        self.queued = 0  # items in `queue`
        self.retry: list[Batch] = []  # failed for a passing reason: written again by the next flush
        self.retry_items = 0
        self.oldest: float | None = None  # time.monotonic() since something waits
        self.wake, self.closing = threading.Event(), threading.Event()
        self.abandoned = False  # `close` ran out of time: the thread must not count what it still holds
        self.writing = 0  # items in the flush in progress
        self.deadline = float("inf")  # time.monotonic() by which `close` must be done
        self.thread = threading.Thread(target=self._run, name="flowtune-serve-capture", daemon=True)
        metrics.capture_buffer_items.set_function(self.buffered)

    # ---------------------------------------------------------------- the request path

    def add(self, served, request: str, latency_ms: float, items: Sequence, answers: Sequence[dict]) -> None:
        """Queue one answered request's items (a sample of them); never blocks, never raises."""
        if self.config.sample < 1.0:
            chosen = [i for i in range(len(items)) if self.draw() < self.config.sample]
            items, answers = [items[i] for i in chosen], [answers[i] for i in chosen]
        if not items:
            return
        count = len(items)
        with self.lock:
            if self.queued + self.retry_items + count > self.config.max_buffer_items:
                self.metrics.capture_dropped.labels("buffer_full").inc(count)
                return
            self.queue.append(Entry(served, request, latency_ms, self.now(), list(items), list(answers)))
            self.queued += count
            if self.oldest is None:
                self.oldest = time.monotonic()
            due = self.queued >= self.config.flush_items
        if due:
            self.wake.set()

    def buffered(self) -> int:
        """Items waiting to be written (queued or waiting for a retry)."""
        return self.queued + self.retry_items

    # ---------------------------------------------------------------- the writer thread

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout_s: float | None = None) -> None:
        """Write what is left within `timeout_s` (default: the config's close_s); what cannot be written by
        then is dropped and counted."""
        timeout_s = self.config.close_s if timeout_s is None else timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.closing.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        with self.lock:  # what is still held now will never be written: count it
            self.abandoned = self.thread.is_alive()  # a write hangs: its batch is lost too
            left = self.queued + self.retry_items + (self.writing if self.abandoned else 0)
            self._count_lost(left, "still held when the shutdown's time ran out")
            self.queue.clear()
            self.retry.clear()
            self.queued = self.retry_items = 0

    def _run(self) -> None:
        self._check_bucket()
        while not self.closing.is_set():
            self.wake.wait(self._until_due())
            self.wake.clear()
            if self.closing.is_set():
                break
            if self._due():
                self.flush(final=False)
        if self.buffered() and time.monotonic() < self.deadline and not self.abandoned:
            self.flush(final=True)  # final: a failed write is dropped, nothing waits for a next flush

    def _check_bucket(self) -> None:
        """Say at once when the bucket cannot be written (a typo, no credentials, storage down)."""
        try:
            self.store.check()
        except Exception as exc:  # noqa: BLE001 - a warning only: serving goes on, items are counted as dropped
            log.warning("capture bucket %r cannot be reached (%s: %s); captured items are dropped and counted "
                        "(flowtune_capture_dropped_total) until it can", self.config.bucket, type(exc).__name__,
                        str(exc)[:300])

    def _until_due(self) -> float:
        oldest = self.oldest
        if oldest is None:
            return self.config.flush_s
        return max(0.0, self.config.flush_s - (time.monotonic() - oldest))

    def _due(self) -> bool:
        oldest = self.oldest
        return self.queued >= self.config.flush_items or (
            oldest is not None and time.monotonic() - oldest >= self.config.flush_s)

    def flush(self, final: bool = False) -> None:
        """Write everything waiting: the retries first (older), then the queue. With `final` nothing is kept
        for later: a failed write drops its items."""
        with self.lock:
            entries, retry = list(self.queue), self.retry
            self.queue.clear()
            self.retry, self.queued, self.retry_items, self.oldest = [], 0, 0, None
            self.writing = sum(len(b.lines) for b in retry) + sum(len(e.items) for e in entries)
        try:
            batches = self.batches(entries)
        except Exception:  # a bug must cost the captured items, never the thread (and so every later item)
            log.exception("capture: %d items could not be made into records; dropped", self.writing)
            batches = []
            self._count_lost(sum(len(e.items) for e in entries), "no records")
        failures: list[tuple[Batch, Exception]] = []
        try:
            for batch in [*retry, *batches]:
                if (failure := self._write(batch)) is not None:
                    failures.append((batch, failure))
        finally:
            with self.lock:
                self.writing = 0
        if failures:
            self._keep_or_drop(failures, final)

    def _write(self, batch: Batch) -> Exception | None:
        """One PUT; the exception when it failed (storage must never reach a request, nor stop this thread)."""
        try:
            self.store.put(batch.key, gzip.compress(b"\n".join(batch.lines) + b"\n", compresslevel=6))
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                self.writing -= len(batch.lines)
            return exc
        with self.lock:
            self.writing -= len(batch.lines)
        self.metrics.capture_written.inc(len(batch.lines))
        return None

    def _keep_or_drop(self, failures: list[tuple[Batch, Exception]], final: bool) -> None:
        """Failed batches that may succeed later are kept for the next flush, newest first, while the buffer keeps
        room for one batch of new items beside them (`max_buffer_items - flush_items`): a long outage then drops
        the oldest items, not the newest traffic. The rest are dropped and counted."""
        from flows.ops.storage import is_transient  # here: botocore stays out of a serve that never captures

        room = self.config.max_buffer_items - self.config.flush_items
        kept = dropped = 0
        with self.lock:
            for batch, exc in reversed(failures):
                count = len(batch.lines)
                if not final and is_transient(exc) and self.queued + self.retry_items + count <= room:
                    self.retry.insert(0, batch)  # oldest first, as they are written next time
                    self.retry_items += count
                    kept += count
                else:
                    dropped += count
            if kept and self.oldest is None:
                self.oldest = time.monotonic()  # retried once flush_s has passed (or the next batch fills)
            if dropped and not self.abandoned:
                self.metrics.capture_dropped.labels("storage").inc(dropped)
        exc = failures[-1][1]
        log.warning("capture: writing %d batches failed (%s: %s); %d items kept for the next flush, %d dropped",
                    len(failures), type(exc).__name__, str(exc)[:300], kept, dropped)

    def _count_lost(self, count: int, why: str) -> None:
        if count:
            self.metrics.capture_dropped.labels("storage").inc(count)
            log.warning("capture: %d items dropped: %s", count, why)

    # ---------------------------------------------------------------- records

    def batches(self, entries: list[Entry]) -> list[Batch]:
        """The entries as objects: one per model and hour, at most `flush_items` lines each."""
        groups: dict[tuple[str, str, str], list[bytes]] = {}
        for served, chunk in by_model(entries):
            for record in self.records(served, chunk):
                day, hour = record["ts"][:10], record["ts"][11:13]
                groups.setdefault((record["model"], day, hour), []).append(
                    json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        size = self.config.flush_items
        return [Batch(f"{model}/{day}/{hour}-{uuid.uuid4().hex[:12]}.jsonl.gz", lines[start:start + size])
                for (model, day, hour), lines in groups.items() for start in range(0, len(lines), size)]

    def records(self, served, entries: list[Entry]) -> list[dict]:
        """One record per item of `entries` (all answered by `served`)."""
        items = [item for entry in entries for item in entry.items]
        answers = [answer for entry in entries for answer in entry.answers]
        stats = describe(served, items, answers)
        model, kind = model_name(served), served.predictor.kind
        records, index = [], 0
        for entry in entries:
            ts = datetime.fromtimestamp(entry.at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            for item, answer in zip(entry.items, entry.answers, strict=True):
                record = {"ts": ts, "model": model, "version": served.version, "kind": kind,
                          "request": entry.request, "latency_ms": round(entry.latency_ms, 3)}
                if not self.config.redact:
                    record |= {"input": item, "output": answer}
                if stats is not None:
                    record["stats"] = stats[index]
                records.append(record)
                index += 1
        return records


def by_model(entries: list[Entry]) -> list[tuple[Any, list[Entry]]]:
    """Entries grouped by the loaded model that answered them (a hot swap may fall inside one flush)."""
    groups: dict[int, tuple[Any, list[Entry]]] = {}
    for entry in entries:
        groups.setdefault(id(entry.served), (entry.served, []))[1].append(entry)
    return list(groups.values())


def describe(served, items: list, answers: list) -> list[dict] | None:
    """The predictor's per-item statistics; None when it fails (the records are written without them)."""
    try:
        stats = served.predictor.describe(items, answers)
        if len(stats) != len(items):
            raise ValueError(f"describe answered {len(stats)} statistics for {len(items)} items")
        return stats
    except Exception as exc:  # noqa: BLE001 - the records still hold input and output
        log.warning("capture: describe failed (%s: %s); records written without stats", type(exc).__name__,
                    str(exc)[:300])
        return None


def model_name(served) -> str:
    """The model's name in keys and records: its registry name, or a served folder's own name."""
    return served.name if served.version is not None else Path(served.name).name


def open_capture(config: CaptureConfig, metrics) -> Capture:
    """A Capture writing to the configured S3 endpoint. A write is tried once, with short timeouts: the next
    flush is the retry."""
    from tasks.settings import Settings, s3_client

    client = s3_client(Settings(), attempts=1, read_timeout=10)
    return Capture(config, Store(client, config.bucket), metrics)
