"""Clean step: the kind's cleaning rules over every split (NER: tasks/kinds/ner/clean.py: unicode
normalization, invisible characters, empty tokens, BIO repair, length limits, exact and near duplicates;
texts: tasks/kinds/textclass/clean.py).

Every change is counted by kind, so the report shows what cleaning did to the data. Duplicates are only
removed within a split: moving sentences between splits is the import step's job. Dev and test of a
hash-split file are cleaned with the same rules as train (they must look like what the model will see);
the official dev and test splits of a source folder (the import report's `split_by`) are normalized but
never thinned, so scores stay comparable with published ones. `clean.decontaminate_train` drops the train
rows that repeat a dev or test row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.io import iter_splits, official_splits, write_json, write_jsonl
from tasks.kinds import cleaning_kind_for
from tasks.params import CleanParams, Params
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.data import CleaningKind

DECONTAMINATED = "dev_test_repeats_dropped"  # the train split's count of rows decontamination dropped


def run(params: CleanParams, src: Path, dst: Path, report_path: Path, kind: CleaningKind) -> dict:
    """Clean every split of `src` into `dst` by the kind's rules (official dev/test splits: normalized, every
    row kept), decontaminate train if asked; write a per-split count report."""
    official = official_splits(src)
    report: dict = {"split_by": "source" if official else "hash", "splits": {}}
    cleaned: dict[str, list] = {}
    for split, path in iter_splits(src):
        counts: Counter = Counter()
        records = kind.read(path)
        cleaned[split] = kind.clean(records, params, counts, keep_every_row=official and split != "train")
        report["splits"][split] = {"input": len(records), **counts}
    if params.decontaminate_train:
        before = len(cleaned["train"])
        cleaned["train"] = decontaminate(cleaned["train"], [*cleaned["dev"], *cleaned["test"]], kind)
        report["splits"]["train"][DECONTAMINATED] = before - len(cleaned["train"])
    for split, rows in cleaned.items():
        report["splits"][split]["output"] = write_jsonl(Path(dst) / f"{split}.jsonl", rows)
    write_json(report_path, report)
    return report


def decontaminate(train: list, evaluation: Sequence, kind: CleaningKind) -> list:
    """The train rows that repeat no dev/test row, compared on the near-duplicate check's key.

    Invariant: afterwards no train row equals a dev/test row (what the contract's no_leakage checks). A row
    without words (punctuation only) has the empty key, which would match every other such row: it is
    compared by its own words instead.
    """
    seen = {leak_key(row, kind) for row in evaluation}
    return [row for row in train if leak_key(row, kind) not in seen]


def leak_key(row, kind: CleaningKind) -> tuple[str, ...]:
    # A near key never holds "", so the marker keeps a word-less row's exact words apart from every near key.
    return kind.near_duplicate_key(row) or ("", *kind.as_sentence(row).tokens)


def step(params: Params, _args) -> str:
    paths = params.paths
    report = run(params.clean, Path(paths.raw), Path(paths.clean), Path(paths.clean_report),
                 cleaning_kind_for(params))
    return str(report["splits"])


def main(argv: list[str] | None = None) -> None:
    run_stage("clean", step, argv)


if __name__ == "__main__":
    main()
