"""The reference profile a version is registered with: what the model's own test split looks like through the
measures of the drift monitor (tasks/drift.py), so that the monitor compares traffic with the version that
answered it, and a swap of the champion changes the reference too.

It is computed by the same code that describes served traffic: the kind's predictor (`predictor_for`) runs
the candidate over up to `monitor.reference_items` test items, evenly spaced, and `describe` gives each item's
stats. It is written into the staged model folder as `reference.json` before the version is published, so it
is uploaded and verified with the weights and becomes visible with the manifest, never alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.drift import profile_of
from tasks.params import Params

REFERENCE_FILE = "reference.json"
logger = logging.getLogger("flowtune.reference")


def evenly(rows: Sequence, count: int) -> list:
    """`count` rows spread over the whole sequence (all of them when there are fewer): a test split sorted by
    source or date is sampled from end to end, and the same split always gives the same items."""
    if len(rows) <= count:
        return list(rows)
    return [rows[i * len(rows) // count] for i in range(count)]


def describe_items(predictor, items: list, batch_size: int) -> list[dict]:
    """Stats of every item, a batch at a time (ids are the item's position)."""
    stats: list[dict] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        answers = predictor.predict(batch, [str(start + i) for i in range(len(batch))])
        stats.extend(predictor.describe(batch, answers))
    return stats


def reference_or_none(params: Params, model_dir: Path, factory: Callable | None = None) -> dict | None:
    """`reference_profile`, or None with a warning naming the error: a model that passed the gate is registered
    even when its reference cannot be made (no test split in this checkout, a predictor that fails); the
    monitor then says that this version has no reference, instead of the model never being published."""
    try:
        return reference_profile(params, model_dir, factory)
    except Exception as exc:  # noqa: BLE001 - monitoring is secondary to publishing a model that passed the gate
        logger.warning("%s not made (%s: %s): the version is registered without it, and the drift monitor will "
                       "skip its traffic", REFERENCE_FILE, type(exc).__name__, exc)
        return None


def reference_profile(params: Params, model_dir: Path, factory: Callable | None = None) -> dict | None:
    """reference.json's content for the model in `model_dir` over this run's test split, profiled by the kind's
    predictor (`factory`: `tasks.kinds.saved.predictor_for` unless a test gives another)."""
    from tasks.kinds import kind_for
    from tasks.kinds.saved import predictor_for

    factory = factory or predictor_for
    kind = kind_for(params)
    rows = evenly(kind.read(Path(params.paths.augmented) / "test.jsonl"), params.monitor.reference_items)
    items = [list(kind.as_sentence(row).tokens) for row in rows]
    predictor = factory(Path(model_dir), params.evaluate.batch_size, None)
    stats = describe_items(predictor, items, params.evaluate.batch_size)
    if len(stats) != len(items):
        raise ValueError(f"the predictor described {len(stats)} of {len(items)} test items")
    return profile_of(stats).to_json()
