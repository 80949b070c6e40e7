"""The champion, re-evaluated on the candidate's test set, so the gate compares like with like.

It is scored by the candidate's code: `python -m tasks.evaluate --model-dir ...` runs in the run's
working copy (the current directory), the same code that `dvc repro` used for the candidate, never the
worker's own copy of `tasks/` (DECISIONS 33). For the gate, a champion whose registered evaluation ran on
exactly these inputs (its dvc.lock's evaluate stage: the same code, test split, reference data and params;
only the model differs) keeps its registered report: scoring it again would give the same scores, at the
cost of a model load and a pass over the test split (DECISIONS 80).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from flows.orchestration.gate import Champion
from flows.orchestration.lineage import dvc_lock
from flows.orchestration.steps import run_logged
from flows.registry import Registry
from tasks.metrics import EvalReport, read_outcome
from tasks.params import Params

EVALUATE_STAGE = "evaluate"
logger = logging.getLogger("flowtune.champion")


def champion_metrics(params: Params, registry: Registry, alias: str = "champion",
                     params_file: str | Path = "params.yaml", reuse: bool = False) -> Champion | None:
    """The model behind `alias` with its report on the current test split, or None when there is none.

    A champion that cannot label this test set (the entity types or classes changed) comes back with an
    `Incomparable` reason instead of a report: the gate then rejects, since nothing shows the candidate
    is not worse (a new label set belongs under a new `registry.model_name`). Any other failure to
    score it raises (`flows.orchestration.steps.StageError`, with the end of the evaluation's output).
    `reuse`: the registered report stands in for a new scoring when it was made on the same inputs.
    """
    name = params.registry.model_name
    version = registry.get_alias(name, alias)
    if version is None:
        return None
    if reuse:
        registered = registry.manifest(name, version).get("metadata") or {}
        if same_evaluation(registered.get("dvc_lock"), dvc_lock(), params.paths.model):
            logger.info("%s v%s (%s) was evaluated on these same inputs (dvc.lock's evaluate stage): its registered "
                        "report is compared, not a new scoring", name, version, alias)
            return Champion(version, EvalReport.model_validate(registered["metrics"]))
    with tempfile.TemporaryDirectory(prefix="flowtune-champion-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(name, version, work / "model")
        out = work / "eval.json"
        run_logged([sys.executable, "-m", "tasks.evaluate", "--params", str(params_file),
                    "--model-dir", str(model_dir), "--out", str(out)], f"scoring {name} v{version} ({alias})",
                   timeout_s=params.timeouts.evaluate, limit_from="timeouts.evaluate in params.yaml")
        return Champion(version, read_outcome(out))


def evaluation_inputs(lock: dict | None, model_path: str) -> dict | None:
    """What the evaluate stage ran on according to `lock`, but the model: its command, its dependencies' hashes
    (code, test split, reference data) and its params; None when the lock has no such stage."""
    stage = ((lock or {}).get("stages") or {}).get(EVALUATE_STAGE)
    if not stage or "deps" not in stage:
        return None
    deps = sorted((dep for dep in stage["deps"] if dep.get("path") != model_path), key=lambda dep: dep["path"])
    return {"cmd": stage.get("cmd"), "deps": deps, "params": stage.get("params")}


def same_evaluation(registered_lock: dict | None, current: dict | None, model_path: str) -> bool:
    """True when both locks' evaluate stages ran on the same inputs apart from the model itself."""
    ours = evaluation_inputs(current, model_path)
    return ours is not None and ours == evaluation_inputs(registered_lock, model_path)
