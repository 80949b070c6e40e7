"""The champion, re-evaluated on the candidate's test set, so the gate compares like with like.

It is scored by the candidate's code: `python -m tasks.evaluate --model-dir ...` runs in the run's
working copy (the current directory), the same code that `dvc repro` used for the candidate, never the
worker's own copy of `tasks/` (DECISIONS 33).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from flows.orchestration.gate import Champion
from flows.orchestration.steps import run_logged
from flows.registry import Registry
from tasks.metrics import read_outcome
from tasks.params import Params


def champion_metrics(params: Params, registry: Registry, alias: str = "champion",
                     params_file: str | Path = "params.yaml") -> Champion | None:
    """The model behind `alias` with its report on the current test split, or None when there is none.

    A champion that cannot label this test set (the entity types or classes changed) comes back with an
    `Incomparable` reason instead of a report: the gate then rejects, since nothing shows the candidate
    is not worse (a new label set belongs under a new `registry.model_name`). Any other failure to
    score it raises (`flows.orchestration.steps.StageError`, with the end of the evaluation's output).
    """
    name = params.registry.model_name
    version = registry.get_alias(name, alias)
    if version is None:
        return None
    with tempfile.TemporaryDirectory(prefix="flowtune-champion-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(name, version, work / "model")
        out = work / "eval.json"
        run_logged([sys.executable, "-m", "tasks.evaluate", "--params", str(params_file),
                    "--model-dir", str(model_dir), "--out", str(out)], f"scoring {name} v{version} ({alias})",
                   timeout_s=params.timeouts.evaluate, limit_from="timeouts.evaluate in params.yaml")
        return Champion(version, read_outcome(out))
