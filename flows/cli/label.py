"""`flowtune label select|push|pull`: the labelling loop with Label Studio (docs/tutorials/labelling.md).

select: candidates from captured traffic (`label.window_days`) or `--from FILE`, minus texts already labelled
(the source folder, the imported splits: dev and test above all) or already queued in the project, ranked by the
champion (`label.strategy`), written to a selection file. push: the selection into the Label Studio project
(created once), with the champion's answers as pre-annotations; `push --review`: the label audit's suspect rows into
the review project, their current labels as pre-annotations. pull: finished annotations back as a batch file, checked
by the data contract first (flows/labelling/checks.py: a breaking task is refused by id, the rest imported), through
`data add`'s code (validated, copied atomically, `flowtune.data.changed` sent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.labelling import rounds
from tasks.settings import Settings


def cmd_select(args: argparse.Namespace) -> int:
    from flows.cli.registry import one_line_errors
    from tasks.params import ParamsError, load_params

    try:
        params = load_params(args.params_file)
    except ParamsError as exc:
        print(f"flowtune label select: error: {exc}", file=sys.stderr)
        return 1
    with one_line_errors("label select"):
        selection, path = rounds.run_select(params, Settings(), args.from_file, args.model, args.n, args.out,
                                            args.source, args.strategy)
    print(f"{len(selection.chosen)} of {selection.pool} candidates chosen ({args.strategy or params.label.strategy}); "
          f"{selection.excluded} already labelled, queued or repeated; {selection.redacted} redacted captures "
          f"skipped -> {path}")
    print("next: `flowtune label push`")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    if args.review:
        return cmd_push_review(args)
    from flows.labelling.loop import config_for, project_title, push, read_selection
    from flows.labelling.studio import StudioError
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    settings = Settings()
    path = rounds.selection_path(settings, args.file)
    try:
        params = load_params(args.params_file)
        candidates = read_selection(path)
        meta_file = path.with_suffix(".meta.json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {"model": "unknown", "labels": []}
        title = project_title(params)
        config = config_for(params, meta["labels"])
        imported, skipped, created = push(rounds.studio(settings), title, config, candidates, meta["model"])
    except (ParamsError, InputFormatError, StudioError) as exc:
        print(f"flowtune label push: error: {exc}", file=sys.stderr)
        return 1
    print(f"project {title!r}{' created' if created else ''}: {imported} tasks imported with {meta['model']}'s "
          f"pre-annotations, {skipped} already queued; label them at {settings.labelling_url}, then "
          "`flowtune label pull`")
    return 0


def cmd_push_review(args: argparse.Namespace) -> int:
    """`label push --review`: the label audit's top rows into the review project."""
    from flows.labelling.loop import audit_labels, push_review, read_audit_report, review_title
    from flows.labelling.studio import StudioError
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    settings = Settings()
    try:
        params = load_params(args.params_file)
        report = Path(args.report or params.label.audit_report)
        items = read_audit_report(report)
        imported, skipped, created = push_review(rounds.studio(settings), params, items, audit_labels(items))
    except (ParamsError, InputFormatError, StudioError) as exc:
        print(f"flowtune label push: error: {exc}", file=sys.stderr)
        return 1
    title = review_title(params)
    print(f"review project {title!r}{' created' if created else ''}: {imported} of the audit's {len(items)} suspect "
          f"rows ({report}) imported with their current labels as pre-annotations and the audit's note, {skipped} "
          f"already queued; review them at {settings.labelling_url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from flows.batches import DataError, send_data_changed
    from flows.labelling.studio import StudioError
    from flows.names import DATA_CHANGED_EVENT
    from tasks.contract import ContractError
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    settings = Settings()
    try:
        params = load_params(args.params_file)
        pulled, added = (rounds.run_pull_review if args.review else rounds.run_pull)(params, settings, args.source)
    except (ParamsError, StudioError, DataError, InputFormatError, ContractError) as exc:
        print(f"flowtune label pull: error: {exc}", file=sys.stderr)
        return 1
    for task_id, why in sorted(pulled.refused.items()):
        print(f"refused task {task_id}: {why}", file=sys.stderr)
    if pulled.refused:
        print("refused tasks are not imported and stay in Label Studio: fix their annotation (or delete the task), "
              "then `flowtune label pull` again", file=sys.stderr)
    if args.review:
        print(f"{len(pulled.rows)} labels corrected; {pulled.unchanged} unchanged (confirmed, or corrected before), "
              f"{len(pulled.refused)} refused, {pulled.empty} empty submissions skipped, {len(pulled.disagreements)} "
              f"with disagreeing annotations (not imported: {pulled.disagreements})")
    else:
        print(f"{len(pulled.rows)} new labelled rows; {len(pulled.refused)} refused, {pulled.empty} empty submissions "
              f"skipped, {pulled.already} imported before, {len(pulled.disagreements)} with disagreeing annotations "
              f"(not imported: {pulled.disagreements})")
    if pulled.agreement:
        print("agreement per label (annotation pairs that agree): " +
              ", ".join(f"{label} {share:.2f}" for label, share in pulled.agreement.items()))
    if added is None:
        return 0
    print(f"added {added.path} ({added.rows} rows, sha256 {added.sha256})" + (
        "; ingest replaces those rows by id (delete the file to undo)" if args.review else ""))
    try:
        print(send_data_changed(settings, params.registry.model_name, added))
    except Exception as exc:  # noqa: BLE001 - as `data add`: the batch is there, only the event failed
        print(f"flowtune label pull: error: the batch is added, but {DATA_CHANGED_EVENT} was not sent "
              f"({type(exc).__name__}: {exc}); " + ("`dvc repro` (or `flowtune run`) applies it" if args.review else
                                                     f"`flowtune data add {added.path}` resends it"), file=sys.stderr)
        return 1
    return 0


def add_label_parser(sub):
    """`flowtune label`; returns its subcommands (`label audit` joins them: flows/cli/audit.py)."""
    label = sub.add_parser("label", help="the labels of the training data: `label select` items worth labelling, "
                           "`label push` them to Label Studio with pre-annotations, `label pull` finished annotations "
                           "as a batch, `label audit` ranks likely label errors (`label push --review` queues them)")
    commands = label.add_subparsers(dest="label_command", required=True, metavar="COMMAND")
    select = commands.add_parser("select", help="choose items to label (label.strategy) from captured traffic or "
                                 "--from FILE, never one already labelled, queued, or in dev/test")
    select.add_argument("--from", dest="from_file", help="a file of items the model's predictor reads (default: "
                        "captured traffic of the last label.window_days days)")
    select.add_argument("--n", type=int, help="how many (default label.n_items)")
    select.add_argument("--strategy", choices=["random", "uncertainty", "uncertainty+diversity"],
                        help="override label.strategy")
    select.add_argument("--out", help="the selection file (default .flowtune/labelling/selected.jsonl)")
    push = commands.add_parser("push", help="import the selection into the Label Studio project (created once) with "
                               "the champion's predictions as pre-annotations; a queued text is not imported twice; "
                               "--review: the label audit's suspect rows into the review project instead",
                               description="Without --review: the selection of `label select` into the project "
                               "label.project (default flowtune-<registry.model_name>), the champion's answers as "
                               "pre-annotations. With --review: the top rows of the `label audit` report into a "
                               "separate review project (<project>-review), each with its current label as the "
                               "pre-annotation and the audit's suspicion (score, suggested label) as a note above "
                               "the text. Either way a text already queued in that project is not imported again.")
    push.add_argument("--file", help="the selection file (default .flowtune/labelling/selected.jsonl)")
    push.add_argument("--review", action="store_true", help="push the label audit's suspect rows for review instead "
                      "of the selection, to the project <project>-review")
    push.add_argument("--report", help="with --review: the audit report (default label.audit_report)")
    pull = commands.add_parser("pull", help="bring finished annotations back as a new batch (validated like "
                               "`data add`, then flowtune.data.changed); a second pull imports nothing twice",
                               description="Exports the project's finished annotations, converts them to the "
                               "project's rows, and runs them through the data contract (the validate stage's "
                               "suites, as after cleaning) before anything is written: a task whose spans, labels "
                               "or text break it, or that repeats a dev/test sentence, is refused by task id and "
                               "stays in Label Studio to fix; the rows that pass become one batch file, added "
                               "atomically, then flowtune.data.changed is sent.")
    for command in (select, push, pull):
        command.add_argument("--params-file", default="params.yaml", help="the params file (label:, task:, registry:)")
    for command in (select, pull):
        command.add_argument("--source", help="the source folder (default: ingest.source of the params file)")
    pull.add_argument("--review", action="store_true", help="pull the review project's corrections (`push --review`) "
                      "instead: changed labels become a file of <source>/corrections/ that ingest applies by row id, "
                      "replacing the original labels (delete the file to undo), never a duplicate row")
    select.add_argument("--model", help="a model folder or registry reference (default <registry.model_name>:champion)")
    select.set_defaults(func=cmd_select)
    push.set_defaults(func=cmd_push)
    pull.set_defaults(func=cmd_pull)
    return commands
