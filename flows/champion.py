"""The champion, re-evaluated on the candidate's test set, so the gate compares like with like."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks import evaluate
from tasks.params import Params
from tasks.registry import Registry


def champion_metrics(params: Params, registry: Registry, alias: str = "champion") -> dict | None:
    """Metrics of the model behind `alias` on the current test split, or None when there is none.

    A champion that cannot label this test set (the entity types or classes changed) comes back with an
    `incomparable` reason instead of scores: the gate then rejects, since nothing shows the candidate
    is not worse (a new label set belongs under a new `registry.model_name`).
    """
    name = params.registry.model_name
    version = registry.get_alias(name, alias)
    if version is None:
        return None
    with tempfile.TemporaryDirectory(prefix="flowtune-champion-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(name, version, work / "model")
        try:
            metrics = evaluate.run(params.evaluate, model_dir, Path(params.paths.augmented) / "test.jsonl",
                                   work / "eval.json", work / "predictions.jsonl", params.train.max_length,
                                   task=params.task)
        except ValueError as exc:
            return {"version": version, "incomparable": str(exc)}
    return {"version": version, **metrics}
