"""Validate step: a Great Expectations suite over the kind's rows, as a data contract.

GX validates tables: the kind turns its rows into tables with their expectations (NER: sentences, tokens,
entity profile, tasks/kinds/ner/contract.py; texts: texts and classes, tasks/kinds/textclass/contract.py).
The suite is built in code from params.yaml, runs on every split (tasks/contract.py), and a failure stops
the pipeline before anything is trained, with up to five example records (file:line ids) per failed
expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tasks.basemodel import contract_piece_counter
from tasks.contract import ContractError, Outcome, run_contract
from tasks.io import iter_splits, write_json
from tasks.kinds import contract_kind_for
from tasks.params import Params, ValidateParams
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.data import ContractKind

CHECKPOINTS = ("raw", "clean", "augmented")  # where in the pipeline the contract runs


def run(params: ValidateParams, data_dir: Path, report_path: Path, counter=None,
        docs_dir: Path | None = None, checkpoint: str = "raw", *, kind: ContractKind) -> dict:
    """Validate `<data_dir>/<split>.jsonl`, write the report (and Data Docs), raise ContractError on failure.

    `checkpoint` (raw, clean, augmented) selects which checks only warn (`validate.soft`); `kind` which
    tables and suites run: sentences + tokens + entity profile (tasks/kinds/ner/contract.py), or texts +
    classes (tasks/kinds/textclass/contract.py)."""
    splits = {split: kind.read(path) for split, path in iter_splits(data_dir)}
    outcomes = run_contract(kind.contract_tables(splits, params, counter), docs_dir)
    profile = kind.data_profile(splits)
    soft = params.soft_checks(checkpoint)
    failed = [o for o in outcomes if not o.success and o.check not in soft]
    warnings = [o for o in outcomes if not o.success and o.check in soft]
    report = {
        "success": not failed,
        "evaluated": len(outcomes),
        "failed": len(failed),
        "warnings": len(warnings),
        **profile,
        "unexpected": {o.check: o.unexpected_count for o in outcomes},
        "expectations": [{**o.__dict__, "severity": "soft" if o.check in soft else "hard"}
                         for o in outcomes],
    }
    write_json(report_path, report)
    if failed:
        details = "\n".join(f"{o.describe()}\n    fix: {kind.contract_hint(o.check, checkpoint)}" for o in failed)
        raise ContractError(f"data contract failed for {data_dir} ({len(failed)} expectations):\n{details}")
    return report


def step(params: Params, args) -> str:
    data_dir, report_path, docs_dir = params.paths.checkpoint(args.data)
    report = run(params.validate_, Path(data_dir), Path(report_path), contract_piece_counter(params), Path(docs_dir),
                 args.data, kind=contract_kind_for(params))
    summary = f"{report['evaluated']} expectations checked on {args.data} data {report['sentences']}"
    warnings = [Outcome(**{k: v for k, v in e.items() if k != "severity"})
                for e in report["expectations"] if not e["success"]]
    return summary + "".join(f"\nwarning (soft, validate.soft): {w.describe()}" for w in warnings)


def main(argv: list[str] | None = None) -> None:
    def add_arguments(parser):
        parser.add_argument("--data", choices=CHECKPOINTS, default="raw", help="which data to check")

    run_stage("validate", step, argv, add_arguments=add_arguments, user_errors=(ContractError,))


if __name__ == "__main__":
    main()
