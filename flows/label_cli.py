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
import tempfile
from pathlib import Path

from tasks.settings import Settings

DEFAULT_SELECTION = "labelling/selected.jsonl"  # under the state dir


def selection_path(settings: Settings, given: str | None) -> Path:
    return Path(given) if given else settings.state_dir / DEFAULT_SELECTION


def studio(settings: Settings):
    from flows.labelling.studio import studio_from_settings
    from flows.services.labelstudio import ensure_credentials

    return studio_from_settings(ensure_credentials(settings, generate=False))


def load_predictor(params, model: str | None, scratch: Path):
    """The champion (or `model`: a folder or a registry reference) as the kind's predictor; (predictor, ref)."""
    from flows.registry_cli import model_folder
    from tasks.kinds.saved import predictor_for

    ref = model or f"{params.registry.model_name}:champion"
    return predictor_for(model_folder(ref, scratch)), ref


def run_select(params, settings: Settings, from_file: str | None = None, model: str | None = None,
               n: int | None = None, out: str | None = None, source: str | None = None, strategy: str | None = None):
    """select, end to end; (Selection, the file written). Label Studio down: queued items are not known, so the
    selection goes on without that exclusion (push skips queued texts anyway) and says so."""
    from flows.labelling.loop import (
        candidates_from_capture,
        candidates_from_file,
        known_keys,
        project_title,
        queued_keys,
        select,
        write_selection,
    )
    from flows.labelling.studio import StudioError
    from tasks.kinds import kind_for

    if strategy:
        params = params.model_copy(update={"label": params.label.model_copy(update={"strategy": strategy})})
    kind = kind_for(params)
    excluded, _ = known_keys(params, kind, source)
    try:
        excluded |= queued_keys(studio(settings), project_title(params))
    except StudioError as exc:
        print(f"note: queued items not excluded ({exc})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="flowtune-label-") as scratch:
        predictor, ref = load_predictor(params, model, Path(scratch))
        redacted = 0
        if from_file:
            candidates = candidates_from_file(predictor, Path(from_file))
        else:
            candidates, redacted = candidates_from_capture(settings, params.registry.model_name, params.task.kind,
                                                           params.label.window_days)
        selection = select(candidates, predictor, params, excluded, n, redacted)
        labels = list(predictor.labels)
    path = write_selection(selection_path(settings, out), selection.chosen)
    path.with_suffix(".meta.json").write_text(json.dumps({"model": ref, "labels": labels}))
    return selection, path


def cmd_select(args: argparse.Namespace) -> int:
    from flows.registry_cli import one_line_errors
    from tasks.params import ParamsError, load_params

    try:
        params = load_params(args.params_file)
    except ParamsError as exc:
        print(f"flowtune label select: error: {exc}", file=sys.stderr)
        return 1
    with one_line_errors("label select"):
        selection, path = run_select(params, Settings(), args.from_file, args.model, args.n, args.out, args.source,
                                     args.strategy)
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
    path = selection_path(settings, args.file)
    try:
        params = load_params(args.params_file)
        candidates = read_selection(path)
        meta_file = path.with_suffix(".meta.json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {"model": "unknown", "labels": []}
        title = project_title(params)
        imported, skipped, created = push(studio(settings), title, config_for(params, meta["labels"]), candidates,
                                          meta["model"])
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
        imported, skipped, created = push_review(studio(settings), params, items, audit_labels(items))
    except (ParamsError, InputFormatError, StudioError) as exc:
        print(f"flowtune label push: error: {exc}", file=sys.stderr)
        return 1
    title = review_title(params)
    print(f"review project {title!r}{' created' if created else ''}: {imported} of the audit's {len(items)} suspect "
          f"rows ({report}) imported with their current labels as pre-annotations and the audit's note, {skipped} "
          f"already queued; review them at {settings.labelling_url}")
    return 0


def run_pull(params, settings: Settings, source: str | None = None):
    """Export, convert and check; with new rows, add them as a batch. (Pulled, Added or None)."""
    from flows.data_cli import add_batch
    from flows.labelling.loop import collect, held_out_keys, is_multi_label, known_keys, project_title, write_batch
    from flows.labelling.studio import StudioError
    from tasks.kinds import kind_for

    client = studio(settings)
    title = project_title(params)
    project = client.find_project(title)
    if project is None:
        raise StudioError(f"Label Studio at {client.url} has no project {title!r}: run `flowtune label push` first")
    kind = kind_for(params)
    known, known_ids = known_keys(params, kind, source)
    labels = params.task.labels or project_labels(project)
    pulled = collect(client.export(project["id"]), params.task.kind, labels, is_multi_label(params), project["id"],
                     known_ids, known, held_out_keys(params, kind, source))
    if not pulled.rows:
        return pulled, None
    with tempfile.TemporaryDirectory(prefix="flowtune-pull-") as scratch:
        batch = write_batch(pulled.rows, Path(scratch), project["id"], params)
        batch = checked_batch(batch, pulled, params, kind, project["id"])
        return pulled, batch and add_batch(batch, params, source)  # the kind's reader checks every row; atomic


def run_pull_review(params, settings: Settings, source: str | None = None):
    """`pull --review`: the review project's changed labels, checked by the contract, as one corrections file of
    the source folder (`<source>/corrections/`, applied by ingest by row id). (Pulled, Added or None)"""
    from flows.data_cli import Added, copy_batch, sha256_of, source_folder
    from flows.labelling.loop import collect_review, is_multi_label, label_value, review_title, write_batch
    from flows.labelling.studio import StudioError
    from tasks.ingest import CORRECTIONS, read_corrections
    from tasks.kinds import kind_for

    client = studio(settings)
    title = review_title(params)
    project = client.find_project(title)
    if project is None:
        raise StudioError(f"Label Studio at {client.url} has no project {title!r}: run `flowtune label push --review` "
                          "first")
    kind = kind_for(params)
    folder = source_folder(params, source)  # the builtin set has no folder to record corrections in: said here
    corrections, _ = read_corrections(folder, params.ingest, kind)
    ner = params.task.kind == "ner"
    corrected = {rid: label_value(row.tags if ner else row.labels, params.task.kind)
                 for rid, (row, _) in corrections.items()}
    labels = params.task.labels or project_labels(project)
    pulled = collect_review(client.export(project["id"]), params.task.kind, labels, is_multi_label(params), corrected)
    if not pulled.rows:
        return pulled, None
    with tempfile.TemporaryDirectory(prefix="flowtune-pull-") as scratch:
        batch = write_batch(pulled.rows, Path(scratch), project["id"], params, "labelstudio-review")
        batch = checked_batch(batch, pulled, params, kind, project["id"], "labelstudio-review")
        if batch is None:
            return pulled, None
        digest = sha256_of(batch)
        target, copied = copy_batch(batch, folder, digest, CORRECTIONS)
        return pulled, Added(target, len(pulled.rows), digest, copied)


def checked_batch(batch: Path, pulled, params, kind, project_id: int, prefix: str = "labelstudio") -> Path | None:
    """`batch` (the pulled rows, written) after the data contract: the tasks whose rows break it move to
    `pulled.refused` (they stay in Label Studio, not imported: a later pull takes them once fixed) and the file is
    written again without them; None when no row is left."""
    from flows.labelling.checks import contract_refusals
    from flows.labelling.loop import write_batch

    refused = contract_refusals(batch, params, kind, pulled.tasks, piece_counter(params))
    if not refused:
        return batch
    pulled.refused.update(refused)
    pulled.rows = [row for row in pulled.rows if pulled.tasks[row["id"]] not in refused]
    batch.unlink()
    return write_batch(pulled.rows, batch.parent, project_id, params, prefix) if pulled.rows else None


def piece_counter(params):
    """The encoder's sub-word piece counter when `validate.max_subword_pieces` is set (the validate stage's)."""
    from tasks.validate import load_piece_counter

    return load_piece_counter(params)


def project_labels(project: dict) -> list[str]:
    """The label values of a project's labelling config (task.labels is [] in the params file)."""
    import re

    return re.findall(r'<(?:Label|Choice) value="([^"]*)"', project.get("label_config", ""))


def cmd_pull(args: argparse.Namespace) -> int:
    from flows.data_cli import DataError, send_data_changed
    from flows.labelling.studio import StudioError
    from flows.names import DATA_CHANGED_EVENT
    from tasks.contract import ContractError
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    settings = Settings()
    try:
        params = load_params(args.params_file)
        pulled, added = (run_pull_review if args.review else run_pull)(params, settings, args.source)
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
    """`flowtune label`; returns its subcommands (`label audit` joins them: flows/audit_cli.py)."""
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
