"""`flowtune data add FILE`: a new batch of labelled data into the source folder (flows/batches.py), and a Prefect
event saying so."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.batches import DATA_CHANGED_EVENT, DataError, add_batch, commit_batch, send_data_changed
from tasks.settings import Settings


def cmd_data_add(args: argparse.Namespace) -> int:
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    try:
        params = load_params(args.params_file)
        added = add_batch(Path(args.file), params, args.source)
    except (ParamsError, DataError, InputFormatError) as exc:
        print(f"flowtune data add: error: {exc}", file=sys.stderr)
        return 1
    if added.copied:
        print(f"added {added.path} ({added.rows} rows, sha256 {added.sha256})")
    else:  # a rerun, e.g. after the event failed: at-least-once, a retrain on unchanged data is a no-op
        print(f"{added.path} is there already with the same content ({added.rows} rows); nothing copied")
    if args.commit and added.copied:
        try:
            added = commit_batch(added)
        except DataError as exc:
            print(f"flowtune data add: error: {exc}; no event sent", file=sys.stderr)
            return 1
        print(f"committed {added.path} ({added.commit[:12]})")
    external = Path(params.paths.external).resolve()
    if not added.path.resolve().is_relative_to(external):
        print(f"warning: {added.path} is outside {params.paths.external} (paths.external), the ingest stage's DVC "
              "dependency: `dvc repro` will not see it; keep the source folder under it")
    try:
        print(send_data_changed(Settings(), params.registry.model_name, added))
    except Exception as exc:  # noqa: BLE001 - the API answered, then the event failed: say so, keep the batch
        print(f"flowtune data add: error: the batch is added, but {DATA_CHANGED_EVENT} was not sent "
              f"({type(exc).__name__}: {exc}); the same command again resends it", file=sys.stderr)
        return 1
    if not args.commit:
        print(f"next: `git add {added.path}` (or `dvc add` it when large), then `dvc repro` re-imports the source; "
              "deployed runs (and those an event starts) use a clean clone of the last commit: commit the batch, "
              "or add it with --commit")
    return 0


def add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="the training data: `data add FILE` adds a batch of labelled rows to the "
                          "source folder and tells Prefect (event flowtune.data.changed)")
    commands = data.add_subparsers(dest="data_command", required=True)
    add = commands.add_parser("add", help="validate FILE with the task kind's reader, copy it into "
                              "<source>/batches/ (never over another file), send flowtune.data.changed")
    add.add_argument("file", help="a batch file of a type the kind reads (NER: .conll, .jsonl; text: .csv, .jsonl)")
    add.add_argument("--source", help="the source folder (default: ingest.source of the params file)")
    add.add_argument("--params-file", default="params.yaml", help="the params file (its kind, reader options, "
                     "ingest.source and registry.model_name)")
    add.add_argument("--commit", action="store_true", help="git-commit the new batch file (alone) before the event: "
                     "deployed runs work in a clean clone of a commit, so only a committed batch reaches them")
    add.set_defaults(func=cmd_data_add)
