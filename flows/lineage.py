"""What a registered version records about where it came from."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prefect.runtime import flow_run

from flows.gate import Decision
from tasks.params import Params
from tasks.settings import Settings


def git_state() -> dict:
    """The commit the code came from and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


def build_lineage(params: Params, decision: Decision, settings: Settings) -> dict:
    """Lineage for the registry: code, data and params hashes, metrics, gate and flow run. No secrets."""
    run_id = flow_run.get_id()
    lock_path = Path("dvc.lock")
    return {
        "git": git_state(),
        "dvc_lock": yaml.safe_load(lock_path.read_text()) if lock_path.exists() else None,
        "params": params.model_dump(by_alias=True),
        "metrics": json.loads(Path(params.paths.eval_metrics).read_text()),
        "training": json.loads(Path(params.paths.train_metrics).read_text()),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
        "flow_run": {"id": str(run_id) if run_id else None,
                     "url": f"{settings.ui_url}/runs/flow-run/{run_id}" if run_id else None},
        "registered_at": datetime.now(UTC).isoformat(),
    }


@contextlib.contextmanager
def staged_model_dir(params: Params, lineage: dict) -> Iterator[Path]:
    """A temporary copy of the candidate with eval.json and lineage.json beside the weights."""
    with tempfile.TemporaryDirectory(prefix="flowtune-register-") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(params.paths.model, staged)
        shutil.copyfile(params.paths.eval_metrics, staged / "eval.json")
        (staged / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
        yield staged
