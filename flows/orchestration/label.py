"""The Prefect flow `select-for-labelling`: `flowtune label select` as a flow run (e.g. a weekly deployment that
queues the week's most uncertain traffic), with the selection's counts as its result."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.names import LABEL_SELECT_FLOW


@flow(name=LABEL_SELECT_FLOW, log_prints=True)
def select_for_labelling(params_file: str = "params.yaml", from_file: str | None = None, model: str | None = None,
                         n: int | None = None, out: str | None = None, push: bool = False) -> dict:
    """Select (and with `push`, queue) items to label; returns the counts and the selection file."""
    from flows.labelling.loop import config_for, project_title
    from flows.labelling.loop import push as push_to_studio
    from flows.labelling.rounds import run_select, selection_path, studio
    from tasks.params import load_params
    from tasks.settings import Settings

    settings, params = Settings(), load_params(params_file)
    selection, path = run_select(params, settings, from_file, model, n, out)
    result = {"chosen": len(selection.chosen), "pool": selection.pool, "excluded": selection.excluded,
              "file": str(path)}
    if push:
        import json

        meta = json.loads(selection_path(settings, out).with_suffix(".meta.json").read_text())
        imported, skipped, _ = push_to_studio(studio(settings), project_title(params),
                                              config_for(params, meta["labels"]), selection.chosen, meta["model"])
        result |= {"imported": imported, "already_queued": skipped}
    get_run_logger().info("labelling selection: %s", result)
    return result
