"""`flowtune label select|push|pull`: the labelling loop with Label Studio (README "Labelling loop").

select: candidates from captured traffic (`label.window_days`) or `--from FILE`, minus texts already labelled
(the source folder, the imported splits: dev and test above all) or already queued in the project, ranked by the
champion (`label.strategy`), written to a selection file. push: the selection into the Label Studio project
(created once), with the champion's answers as pre-annotations. pull: finished annotations back as a batch file
through `data add`'s code (validated, copied atomically, `flowtune.data.changed` sent).
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


def run_pull(params, settings: Settings, source: str | None = None):
    """Export, convert and check; with new rows, add them as a batch. (Pulled, Added or None)."""
    from flows.data_cli import add_batch
    from flows.labelling.loop import collect, is_multi_label, known_keys, project_title, write_batch
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
                     known_ids, known)
    if not pulled.rows:
        return pulled, None
    with tempfile.TemporaryDirectory(prefix="flowtune-pull-") as scratch:
        batch = write_batch(pulled.rows, Path(scratch), project["id"], params)
        return pulled, add_batch(batch, params, source)  # the kind's reader checks every row; an atomic copy


def project_labels(project: dict) -> list[str]:
    """The label values of a project's labelling config (task.labels is [] in the params file)."""
    import re

    return re.findall(r'<(?:Label|Choice) value="([^"]*)"', project.get("label_config", ""))


def cmd_pull(args: argparse.Namespace) -> int:
    from flows.data_cli import DataError, send_data_changed
    from flows.labelling.studio import StudioError
    from flows.names import DATA_CHANGED_EVENT
    from tasks.io import InputFormatError
    from tasks.params import ParamsError, load_params

    settings = Settings()
    try:
        params = load_params(args.params_file)
        pulled, added = run_pull(params, settings, args.source)
    except (ParamsError, StudioError, DataError, InputFormatError) as exc:
        print(f"flowtune label pull: error: {exc}", file=sys.stderr)
        return 1
    for task_id, why in sorted(pulled.refused.items()):
        print(f"refused task {task_id}: {why}", file=sys.stderr)
    print(f"{len(pulled.rows)} new labelled rows; {len(pulled.refused)} refused, {pulled.empty} empty submissions "
          f"skipped, {pulled.already} imported before, {len(pulled.disagreements)} with disagreeing annotations "
          f"(not imported: {pulled.disagreements})")
    if pulled.agreement:
        print("agreement per label (annotation pairs that agree): " +
              ", ".join(f"{label} {share:.2f}" for label, share in pulled.agreement.items()))
    if added is None:
        return 0
    print(f"added {added.path} ({added.rows} rows, sha256 {added.sha256})")
    try:
        print(send_data_changed(settings, params.registry.model_name, added))
    except Exception as exc:  # noqa: BLE001 - as `data add`: the batch is there, only the event failed
        print(f"flowtune label pull: error: the batch is added, but {DATA_CHANGED_EVENT} was not sent "
              f"({type(exc).__name__}: {exc}); `flowtune data add {added.path}` resends it", file=sys.stderr)
        return 1
    return 0


def add_label_parser(sub):
    """`flowtune label`; returns its subcommands (`label audit` joins them: flows/audit_cli.py)."""
    label = sub.add_parser("label", help="the labels of the training data: `label select` items worth labelling, "
                           "`label push` them to Label Studio with pre-annotations, `label pull` finished annotations "
                           "as a batch, `label audit` ranks likely label errors")
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
                               "the champion's predictions as pre-annotations; a queued text is not imported twice")
    push.add_argument("--file", help="the selection file (default .flowtune/labelling/selected.jsonl)")
    pull = commands.add_parser("pull", help="bring finished annotations back as a new batch (validated like "
                               "`data add`, then flowtune.data.changed); a second pull imports nothing twice")
    for command in (select, push, pull):
        command.add_argument("--params-file", default="params.yaml", help="the params file (label:, task:, registry:)")
    for command in (select, pull):
        command.add_argument("--source", help="the source folder (default: ingest.source of the params file)")
    select.add_argument("--model", help="a model folder or registry reference (default <registry.model_name>:champion)")
    select.set_defaults(func=cmd_select)
    push.set_defaults(func=cmd_push)
    pull.set_defaults(func=cmd_pull)
    return commands
