"""What a round of the labelling loop does, for `flowtune label` (flows/cli/label.py) and the
select-for-labelling flow (flows/orchestration/label.py): select candidates ranked by the champion, pull finished
annotations back as a checked batch (docs/tutorials/labelling.md).
"""

from __future__ import annotations

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
    from flows.ops.services.labelstudio import ensure_credentials

    return studio_from_settings(ensure_credentials(settings, generate=False))


def load_predictor(params, model: str | None, scratch: Path):
    """The champion (or `model`: a folder or a registry reference) as the kind's predictor; (predictor, ref)."""
    from flows.ops.storage import model_folder
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


def run_pull(params, settings: Settings, source: str | None = None):
    """Export, convert and check; with new rows, add them as a batch. (Pulled, Added or None)."""
    from flows.batches import add_batch
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
    from flows.batches import Added, copy_batch, sha256_of, source_folder
    from flows.labelling.loop import collect_review, is_multi_label, label_value, review_title, write_batch
    from flows.labelling.studio import StudioError
    from tasks.kinds import kind_for
    from tasks.sources import CORRECTIONS, read_corrections

    client = studio(settings)
    title = review_title(params)
    project = client.find_project(title)
    if project is None:
        raise StudioError(f"Label Studio at {client.url} has no project {title!r}: run `flowtune label push --review` "
                          "first")
    kind = kind_for(params)
    folder = source_folder(params, source)  # the builtin set has no folder to record corrections in: said here
    corrections, _ = read_corrections(folder, kind.source_suffixes, kind.source_reader(params.ingest))
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
    from tasks.basemodel import contract_piece_counter

    refused = contract_refusals(batch, params, kind, pulled.tasks, contract_piece_counter(params))
    if not refused:
        return batch
    pulled.refused.update(refused)
    pulled.rows = [row for row in pulled.rows if pulled.tasks[row["id"]] not in refused]
    batch.unlink()
    return write_batch(pulled.rows, batch.parent, project_id, params, prefix) if pulled.rows else None


def project_labels(project: dict) -> list[str]:
    """The label values of a project's labelling config (task.labels is [] in the params file)."""
    import re

    return re.findall(r'<(?:Label|Choice) value="([^"]*)"', project.get("label_config", ""))
