"""Dynamic micro-batching with fair shares: concurrent requests share forward passes, and a huge request
cannot starve the others.

Requests queue their items; one loop builds each forward pass from what is queued and runs it in a worker
thread. A pass holds at most `max_batch_size` items and `max_batch_cost` cost (words, as the service counts
them), so one pass takes a bounded time whatever a request holds. Requests share a pass round-robin: each
waiting request gets an equal share of the pass's cost first, then any room left goes to whoever has more,
and the next pass starts with the next request. A request larger than a pass is answered over several
passes, while a small request that arrives meanwhile waits for at most the pass that runs and then rides
in the next one.

A request is answered by one model: the first pass that takes its items pins the model current then, and
its later items run on that model even if a hot swap happened in between (the old model stays in memory
until its last request is answered).

Backpressure: `submit` refuses work (`Overloaded`) when the cost still queued would pass `max_queue_cost`,
and a request not answered within its `timeout_s` gets `TimeoutError`; its items still queued are dropped,
as are those of a client that went away.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any


class Overloaded(RuntimeError):
    """The queue is full (`retry_after()` estimates when it will have drained)."""


@dataclass(eq=False)
class Pending:
    items: Sequence[Any]
    ids: Sequence[str]
    costs: Sequence[int]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    answers: list = field(init=False)
    taken: int = 0  # items before this index are in a pass already
    model: Any = None  # pinned by the first pass that takes an item

    def __post_init__(self):
        self.answers = [None] * len(self.items)
        # Cost before each index: the queued cost is asked on every submit and pass, so O(1), not a sum.
        self._cost_before = list(accumulate(self.costs, initial=0))

    @property
    def queued_cost(self) -> int:
        return self._cost_before[-1] - self._cost_before[self.taken]


@dataclass
class Slice:
    pending: Pending
    start: int
    end: int


class MicroBatcher:
    """`await submit(items, ids, costs, timeout_s)` -> (answers, the model that answered);
    `run_batch(model, items, ids)` does the work."""

    def __init__(self, current: Callable[[], Any], run_batch: Callable[[Any, list, list], list],
                 max_batch_size: int, max_wait_ms: float, max_batch_cost: int = 1 << 30,
                 max_queue_cost: int = 1 << 40, on_batch: Callable[[int], None] = lambda size: None):
        self.current, self.run_batch, self.on_batch = current, run_batch, on_batch
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000
        self.max_batch_cost, self.max_queue_cost = max_batch_cost, max_queue_cost
        self.waiting: deque[Pending] = deque()  # requests with items not yet in a pass, round-robin order
        self.arrived = asyncio.Event()
        self.cost_per_s = 0.0  # measured throughput, for Retry-After
        self.running: list[Slice] = []  # the pass in the worker thread
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for pending in [*self.waiting, *(s.pending for s in self.running)]:
            if not pending.done.done():
                pending.done.set_exception(RuntimeError("the service is shutting down"))

    def queued_cost(self) -> int:
        return sum(p.queued_cost for p in self._live())

    async def submit(self, items: Sequence[Any], ids: Sequence[str], costs: Sequence[int] | None = None,
                     timeout_s: float | None = None) -> tuple[list, Any]:
        costs = list(costs) if costs is not None else [1] * len(items)
        queued = self.queued_cost()
        if queued and queued + sum(costs) > self.max_queue_cost:
            raise Overloaded(f"{queued} queued, at most {self.max_queue_cost}")
        pending = Pending(items, ids, costs)
        self.waiting.append(pending)
        self.arrived.set()
        # On timeout (or the client leaving) wait_for cancels `done`: the loop then skips what is left of it.
        return await asyncio.wait_for(pending.done, timeout_s)

    def full(self) -> bool:
        return self.queued_cost() >= self.max_queue_cost

    def retry_after(self) -> int:
        """Seconds until what is queued now should have drained, at the measured pace (1 to 60)."""
        seconds = self.queued_cost() / self.cost_per_s if self.cost_per_s > 0 else 1
        return max(1, min(60, math.ceil(seconds)))

    def _live(self) -> list[Pending]:
        return [p for p in self.waiting if not p.done.done()]

    async def _loop(self) -> None:
        while True:
            model, slices = await self._collect()
            self.running = slices
            items = [item for s in slices for item in s.pending.items[s.start:s.end]]
            ids = [i for s in slices for i in s.pending.ids[s.start:s.end]]
            cost = sum(sum(s.pending.costs[s.start:s.end]) for s in slices)
            self.on_batch(len(items))
            started = time.perf_counter()
            try:
                answers = await asyncio.to_thread(self.run_batch, model, items, ids)
            except Exception as exc:  # noqa: BLE001 - every request in the pass gets the error, the loop goes on
                for s in slices:
                    if not s.pending.done.done():
                        s.pending.done.set_exception(exc)
                continue
            self._measure(cost, time.perf_counter() - started)
            self._deliver(model, slices, answers)

    def _measure(self, cost: int, seconds: float) -> None:
        rate = cost / max(seconds, 1e-6)
        self.cost_per_s = rate if self.cost_per_s == 0 else 0.8 * self.cost_per_s + 0.2 * rate

    @staticmethod
    def _deliver(model: Any, slices: list[Slice], answers: list) -> None:
        position = 0
        for s in slices:
            count = s.end - s.start
            s.pending.answers[s.start:s.end] = answers[position:position + count]
            position += count
            # Passes run one after another, so the slice that ends a request is its last to be answered;
            # a client that went away cancelled its future.
            if s.end == len(s.pending.items) and not s.pending.done.done():
                s.pending.done.set_result((s.pending.answers, model))

    async def _collect(self) -> tuple[Any, list[Slice]]:
        """Wait for work; while less than a full pass of new requests is queued, wait up to max_wait_ms for more."""
        while not self._live():
            self.arrived.clear()
            await self.arrived.wait()
        deadline = time.monotonic() + self.max_wait_s
        while not self._full_pass_queued() and (left := deadline - time.monotonic()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                break
        return self._take()

    def _full_pass_queued(self) -> bool:
        """Whether the next pass can go now: it would be full, or it goes on with a request already begun."""
        live = self._live()
        if any(p.taken for p in live):
            return True
        items = sum(len(p.items) - p.taken for p in live)
        return items >= self.max_batch_size or sum(p.queued_cost for p in live) >= self.max_batch_cost

    def _take(self) -> tuple[Any, list[Slice]]:
        """The next pass: its model and a slice of each request it serves (fair shares, then the room left)."""
        self.waiting = deque(self._live())
        current, first = self.current(), self.waiting[0]
        model = current if first.model is None else first.model
        # Requests pinned to an older model finish on it; new ones start on the current model.
        eligible = [p for p in self.waiting if p.model is model or (p.model is None and model is current)]
        share = Share(max(1, self.max_batch_size // len(eligible)), max(1, self.max_batch_cost // len(eligible)))
        taken: dict[int, Slice] = {}
        room = Room(self.max_batch_size, self.max_batch_cost)
        for limit in (share, None):  # equal shares first, then whatever room is left
            for pending in eligible:
                self._take_from(pending, limit, room, taken)
        for s in taken.values():
            s.pending.model = model
        self.waiting.rotate(-1)  # the next pass starts with the next request
        self.waiting = deque(p for p in self.waiting if p.taken < len(p.items))
        return model, list(taken.values())

    @staticmethod
    def _take_from(pending: Pending, share: Share | None, room: Room, taken: dict[int, Slice]) -> None:
        """Items of `pending` into the pass while they fit the room (and its share, if any)."""
        mine = Room(share.items, share.cost) if share else None
        while pending.taken < len(pending.items):
            cost = pending.costs[pending.taken]
            if not room.empty and (not room.fits(cost) or (mine is not None and not mine.fits(cost))):
                return
            room.add(cost)
            if mine is not None:
                mine.add(cost)
            piece = taken.setdefault(id(pending), Slice(pending, pending.taken, pending.taken))
            pending.taken += 1
            piece.end = pending.taken


@dataclass(frozen=True)
class Share:
    """What one request may take of a pass before the others have had theirs."""

    items: int
    cost: int


@dataclass
class Room:
    """What is left of a pass: items and cost. The first item always fits (one item is the smallest pass)."""

    max_items: int
    max_cost: int
    items: int = 0
    cost: int = 0

    @property
    def empty(self) -> bool:
        return self.items == 0

    def fits(self, cost: int) -> bool:
        return self.items < self.max_items and self.cost + cost <= self.max_cost

    def add(self, cost: int) -> None:
        self.items += 1
        self.cost += cost
