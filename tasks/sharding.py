"""Run a function over shards of a list on a Dask cluster, results in shard order.

The cluster is `address` (a running `dask scheduler`, e.g. `tcp://10.0.0.5:8786`) or, when unset, a
local cluster of worker processes started for the call and stopped after it. Shards are contiguous
slices, so concatenating the per-shard results keeps the input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any


def shard(items: Sequence, shards: int) -> list[list]:
    """`shards` contiguous, near-equal slices (fewer when there are fewer items); order kept."""
    shards = max(1, min(shards, len(items)))
    size, extra = divmod(len(items), shards)
    bounds, start = [], 0
    for i in range(shards):
        end = start + size + (1 if i < extra else 0)
        bounds.append(list(items[start:end]))
        start = end
    return bounds


def map_shards(function: Callable[..., Any], *args: Any, items: Sequence | None = None, shards: int = 2,
               address: str | None = None) -> list[Any]:
    """[function(*args, shard) for shard in shard(items, shards)], run on Dask workers."""
    from dask.distributed import Client, LocalCluster

    parts = shard(items or [], shards)
    if address:
        with Client(address) as client:
            return client.gather([client.submit(function, *args, part, pure=False) for part in parts])
    workers = max(1, min(len(parts), os.cpu_count() or 1))
    # Processes, one thread each: the augmenters are Python-heavy (GIL-bound in threads).
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        return client.gather([client.submit(function, *args, part, pure=False) for part in parts])
