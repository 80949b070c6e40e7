"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests queue their items; one loop takes everything queued (up to `max_batch_size` items, waiting at
most `max_wait_ms` after the first for more), runs the model once in a worker thread and hands each
request its slice. The model is read once per batch, so a hot swap between two batches never splits a
request across two versions: every answer of a batch comes from the model that started it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pending:
    items: Sequence[Any]
    ids: Sequence[str]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    """`await submit(items, ids)` -> (answers, what answered them); `run_batch(model, items, ids)` does the work
    with the model `current()` returned when the batch started."""

    def __init__(self, current: Callable[[], Any], run_batch: Callable[[Any, list, list], list],
                 max_batch_size: int, max_wait_ms: float, on_batch: Callable[[int], None] = lambda size: None):
        self.current, self.run_batch, self.on_batch = current, run_batch, on_batch
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.carried: Pending | None = None  # taken from the queue, too big for the last batch: the next one's first
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, items: Sequence[Any], ids: Sequence[str]) -> tuple[list, Any]:
        pending = Pending(items, ids)
        await self.queue.put(pending)
        return await pending.done

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            model = self.current()
            items = [item for p in batch for item in p.items]
            ids = [i for p in batch for i in p.ids]
            self.on_batch(len(items))
            try:
                answers = await asyncio.to_thread(self.run_batch, model, items, ids)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            start = 0
            for p in batch:
                if not p.done.done():  # a client that went away cancelled its future
                    p.done.set_result((answers[start:start + len(p.items)], model))
                start += len(p.items)

    async def _collect(self) -> list[Pending]:
        """The first waiting request, then whatever else arrives within max_wait_ms while the batch has room.
        A request is never split: one larger than the room left starts the next batch."""
        first, self.carried = self.carried or await self.queue.get(), None
        batch, size, deadline = [first], len(first.items), time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                nxt = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            if size + len(nxt.items) > self.max_batch_size:
                self.carried = nxt
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch
