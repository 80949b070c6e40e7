"""Clean step: the kind's cleaning rules over every split (NER: tasks/kinds/ner/clean.py: unicode
normalization, invisible characters, empty tokens, BIO repair, length limits, exact and near duplicates;
texts: tasks/kinds/textclass/data.py).

Every change is counted by kind, so the report shows what cleaning did to the data. Dev and test are
cleaned with the same rules as train (they must look like what the model will see), but duplicates
are only removed within a split: moving sentences between splits is the import step's job.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.io import iter_splits, write_json, write_jsonl
from tasks.kinds import kind_for
from tasks.params import CleanParams, Params
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.base import TaskKind


def run(params: CleanParams, src: Path, dst: Path, report_path: Path, kind: TaskKind) -> dict:
    """Clean every split of `src` into `dst` by the kind's rules; write a per-split count report."""
    report: dict = {"splits": {}}
    for split, path in iter_splits(src):
        counts: Counter = Counter()
        records = kind.read(path)
        kept = kind.clean(records, params, counts)
        write_jsonl(Path(dst) / f"{split}.jsonl", kept)
        report["splits"][split] = {"input": len(records), "output": len(kept), **counts}
    write_json(report_path, report)
    return report


def step(params: Params, _args) -> str:
    paths = params.paths
    report = run(params.clean, Path(paths.raw), Path(paths.clean), Path(paths.clean_report),
                 kind_for(params))
    return str(report["splits"])


def main(argv: list[str] | None = None) -> None:
    run_stage("clean", step, argv)


if __name__ == "__main__":
    main()
