"""`flowtune label audit`: the label-audit flow (flows/orchestration/audit.py) on this checkout's Prefect server."""

from __future__ import annotations

import argparse
import os

from flows.cli.outcome import print_outcome
from tasks.settings import Settings


def add_audit_parser(label_commands) -> None:
    """`audit` under `flowtune label` (`label_commands`: that command's subparsers)."""
    audit = label_commands.add_parser(
        "audit", help="rank the train split's rows by how likely their labels are wrong (k-fold cross-fitting + "
        "cleanlab); report under label.audit_report, top rows as a Prefect table",
        description="Trains k models, each on k-1 folds of the cleaned train split, scores every row with the model "
        "that did not see it, and ranks the rows with cleanlab (docs/tutorials/labelling.md).")
    audit.add_argument("--params-file", default="params.yaml", help="the params file (label.audit_* keys)")
    audit.add_argument("--k", type=int, help="folds of the cross-fitting (default: label.audit_folds)")
    audit.add_argument("--top", type=int, help="rows listed in the report and the table (default: label.audit_top)")
    audit.add_argument("--epochs", type=int, help="epochs of each fold's model (default: label.audit_epochs)")
    audit.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from flows.ops.services import service_env

    settings = Settings()
    os.environ.update(service_env(settings))  # our Prefect server, before Prefect is imported (as `flowtune run`)
    from flows.orchestration.audit import label_audit

    state = label_audit(params_file=args.params_file, folds=args.k, top=args.top, epochs=args.epochs,
                        return_state=True)
    result = print_outcome("label audit", state, settings)
    if result is None:
        return 1
    print(f"Rows ranked:           {result['rows']} ({result['flagged']} flagged by cleanlab)")
    print(f"Report:                {result['report']} (top {result['top']}: {result['csv']})")
    return 0
