"""Augment step: label-preserving augmentation of the train split.

Until the augmenters land (back-translation, synonym swap), the step copies train through unchanged.
Dev and test are always copied byte for byte: augmentation never touches evaluation data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.params import AugmentParams, Params
from tasks.records import iter_splits, load_jsonl, write_json
from tasks.stage import run_stage


def run(params: AugmentParams, src: Path, dst: Path, report_path: Path) -> dict:
    """Write `<dst>/<split>.jsonl`; dev and test are exact copies of the input files."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, path in iter_splits(src):
        target = Path(dst) / path.name
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        counts[split] = len(load_jsonl(target))
    report = {"methods": list(params.methods), "added": 0, "sentences": counts}
    write_json(report_path, report)
    return report


def step(params: Params, _args) -> str:
    paths = params.paths
    return str(run(params.augment, Path(paths.clean), Path(paths.augmented), Path(paths.augment_report)))


def main(argv: list[str] | None = None) -> None:
    run_stage("augment", step, argv)


if __name__ == "__main__":
    main()
