"""The label-audit flow (`flowtune label audit`): runs `python -m tasks.audit` in this checkout (k-fold
cross-fitting and cleanlab's ranking, tasks/audit.py) and publishes its top rows as a Prefect table: each row's
sentence or text, the labels it has, the labels the cross-fitted models suggest, and cleanlab's score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.names import LABEL_AUDIT_FLOW
from flows.orchestration.steps import run_logged
from tasks.params import load_params

ARTIFACT_KEY = "label-audit"


def audit_command(params_file: str, folds: int | None, top: int | None, epochs: int | None) -> list[str]:
    options = [(flag, value) for flag, value in (("--k", folds), ("--top", top), ("--epochs", epochs)) if value]
    return [sys.executable, "-m", "tasks.audit", "--params", params_file,
            *[part for flag, value in options for part in (flag, str(value))]]


def table_rows(items: list[dict]) -> list[dict]:
    """The report's top items as table rows; tag lists are space-joined, aligned with the sentence's words."""
    rows = []
    for rank, item in enumerate(items, 1):
        tagged = "tokens" in item
        joined = [" ".join(v) if tagged else v for v in (item.get("tokens", item.get("text")), item["given"],
                                                       item["suggested"])]
        rows.append({"rank": rank, "id": item["id"], "sentence" if tagged else "text": joined[0],
                     "given": joined[1], "suggested": joined[2], "score": round(item["score"], 4)})
    return rows


@flow(name=LABEL_AUDIT_FLOW, log_prints=True)
def label_audit(params_file: str = "params.yaml", folds: int | None = None, top: int | None = None,
                epochs: int | None = None) -> dict:
    """Rank the cleaned train split's rows by how likely their labels are wrong; returns the report's summary
    and its path. Options override the params file's `label.audit_*` keys."""
    params = load_params(params_file)  # a bad params file fails here, before any training
    run_logged(audit_command(params_file, folds, top, epochs), "label audit")
    path = Path(params.label.audit_report)
    report = json.loads(path.read_text(encoding="utf-8"))
    counts = report["summary"]
    create_table_artifact(key=ARTIFACT_KEY, table=table_rows(report["top"]) or [{"rank": 0, "id": "none"}],
                          description=f"Label audit: the {counts['top']} most suspect of {counts['rows']} train "
                          f"rows ({counts['flagged']} flagged by cleanlab; {counts['folds']}-fold cross-fitting)")
    return {**counts, "report": str(path), "csv": str(path.with_suffix(".csv"))}
