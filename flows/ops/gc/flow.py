"""The `flowtune-gc` flow (weekly deployment `gc`): `flowtune gc --apply` as a flow run, with its summary as an
artifact.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.names import GC_FLOW
from flows.ops.gc.apply import run_gc, summary_markdown
from tasks.params import load_params
from tasks.settings import Settings


class GcError(RuntimeError):
    """Some planned deletions failed; the message lists them."""


@flow(name=GC_FLOW, log_prints=True)
def garbage_collect(params_file: str = "params.yaml") -> dict:
    """Apply the retention rules of `params_file` (section `gc:`) to everything flowtune stored."""
    settings = Settings()
    report = run_gc(settings, load_params(params_file).gc, apply=True)
    create_markdown_artifact(key="gc-summary", markdown=summary_markdown(report), description="flowtune gc")
    if report.failed:
        raise GcError(f"{len(report.failed)} deletions failed: " + "; ".join(report.failed[:5]))
    return {"deleted": len(report.deletions) - len(report.skipped), "bytes": report.total}
