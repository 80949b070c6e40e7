"""The drift monitor's reference profile of the candidate, made by the evaluate stage: what the model's own test
split looks like through the measures of the drift monitor (tasks/drift.py), so that the monitor compares traffic
with the version that answered it, and a swap of the champion changes the reference too.

It is computed by the same code that describes served traffic: the kind's predictor (`predictor_for`) runs the
candidate over up to `monitor.reference_items` test items, evenly spaced, and `describe` gives each item's stats.
The evaluate stage writes it to `paths.drift_reference` (a DVC output: made once per trained model, in the
process that has the model's libraries loaded already); registration stores it in the version as reference.json
(flows/ops/reference.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.drift import profile_of
from tasks.io import write_json
from tasks.params import Params

UNAVAILABLE = "unavailable"  # the key of the file written when no profile could be made: the reason
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


def reference_profile(params: Params, model_dir: Path, factory: Callable | None = None) -> dict:
    """The profile of the model in `model_dir` over this run's test split, by the kind's predictor (`factory`:
    `tasks.kinds.saved.predictor_for` unless a test gives another)."""
    from tasks.kinds import model_kind_for
    from tasks.kinds.saved import predictor_for

    factory = factory or predictor_for
    kind = model_kind_for(params)  # the model side reads the split: the evaluate stage runs no data preparation
    rows = evenly(kind.read(Path(params.paths.augmented) / "test.jsonl"), params.monitor.reference_items)
    items = [list(kind.as_sentence(row).tokens) for row in rows]
    predictor = factory(Path(model_dir), params.evaluate.batch_size, None)
    stats = describe_items(predictor, items, params.evaluate.batch_size)
    if len(stats) != len(items):
        raise ValueError(f"the predictor described {len(stats)} of {len(items)} test items")
    return profile_of(stats).to_json()


def write_reference(params: Params, model_dir: Path, path: Path, factory: Callable | None = None) -> bool:
    """Write `reference_profile` to `path`; True if made. A model that passes the gate is registered even when
    its reference cannot be made (a predictor that fails): `path` then holds `{"unavailable": reason}`, a
    warning names the error, and the monitor says that this version has no reference."""
    try:
        write_json(path, reference_profile(params, model_dir, factory))
        return True
    except Exception as exc:  # noqa: BLE001 - monitoring is secondary to the evaluation and to the model
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("no drift reference for %s (%s): the version will be registered without one", model_dir,
                       reason)
        write_json(path, {UNAVAILABLE: reason})
        return False


def read_reference(path: Path) -> dict:
    """The profile in `path`; ValueError naming the file when it holds the reason there is none instead."""
    content = json.loads(Path(path).read_text())
    if UNAVAILABLE in content:
        raise ValueError(f"{path}: no profile was made ({content[UNAVAILABLE]})")
    return content
