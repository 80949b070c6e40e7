"""`flowtune sweep` (run the search), `flowtune sweep dashboard` (optuna-dashboard on the study) and
`flowtune sweep apply` (the best trial's values into the params file, comments kept, diff printed)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path

import yaml

from flows.cli.outcome import print_outcome
from tasks.params import ParamsError, check_sweep_space, load_params
from tasks.settings import Settings

DEFAULT_DASHBOARD_PORT = 8087


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="hyperparameter search over the params file's `sweep.space` with Optuna: "
                           "trials are flow runs on the work pool, pruned early when unpromising",
                           description="`flowtune sweep` runs the search (docs/tutorials/sweeps.md); `flowtune sweep "
                           "dashboard` opens optuna-dashboard on the study; `flowtune sweep apply` writes the best "
                           "trial's values into the params file and prints the diff.")
    sweep.add_argument("action", nargs="?", choices=("run", "dashboard", "apply"), default="run",
                       help="run the search (default), open the dashboard, or apply the best trial")
    sweep.add_argument("--params-file", default="params.yaml", help="the params file with the `sweep:` section "
                       "(committed: trials check the commit out)")
    sweep.add_argument("--data-source", help="replace ingest.source for every trial (as the flows' data_source)")
    sweep.add_argument("--revision", default="HEAD", help="the commit the trials run (default: HEAD)")
    sweep.add_argument("--local", action="store_true", help="run the trials as subprocesses on this machine "
                       "instead of the work pool (when no worker runs)")
    sweep.add_argument("--port", type=int, default=DEFAULT_DASHBOARD_PORT, help="dashboard: port on 127.0.0.1")
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params_file)
        check_sweep_space(yaml.safe_load(Path(args.params_file).read_text()), args.params_file)
    except ParamsError as exc:
        print(f"flowtune sweep: {exc}", file=sys.stderr)
        return 1
    settings = Settings()
    if args.action == "dashboard":
        return dashboard(params.sweep, settings, args.port)
    if args.action == "apply":
        return apply_best(args.params_file, params.sweep, settings)
    return run_sweep(args, settings)


def run_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from flows.ops.services import service_env

    os.environ.update(service_env(settings))  # our Prefect server, before Prefect is imported (as `flowtune run`)
    from flows.orchestration.sweep import sweep

    state = sweep(revision=args.revision, params_file=args.params_file, data_source=args.data_source,
                  local=args.local, return_state=True)
    result = print_outcome("sweep", state, settings)
    if result is None:
        return 1
    best = result["best"]
    print(f"Best trial:            #{best['trial']} dev {best['dev_score']:.4f}, test {best['test_name']} "
          f"{best['test_score']:.4f} (test scored once, for this trial)")
    print(f"Values:                {best['params']}")
    for name, url in result["plots"].items():
        print(f"Plot ({name}): {url}")
    print("Next:                  flowtune sweep apply   (writes these values into the params file)")
    return 0


def open_existing(sweep, settings: Settings):
    """The sweep's study, or None (with a message) when no sweep of that name ran yet."""
    import optuna

    from tasks import sweeping

    storage = sweeping.open_storage(sweeping.storage_spec(sweep.storage, settings.state_dir))
    try:
        return optuna.load_study(study_name=sweep.study, storage=storage)
    except KeyError:
        print(f"flowtune sweep: no study {sweep.study!r} yet; run `flowtune sweep` first", file=sys.stderr)
        return None


def dashboard(sweep, settings: Settings, port: int) -> int:
    """optuna-dashboard on the sweep's storage, on 127.0.0.1 only (it can edit studies: never on all
    interfaces). Blocks until ctrl-C."""
    from optuna_dashboard import run_server

    from tasks import sweeping

    if open_existing(sweep, settings) is None:
        return 1
    print(f"optuna-dashboard on http://127.0.0.1:{port}/dashboard/ (study {sweep.study!r}); ctrl-C stops it")
    run_server(sweeping.open_storage(sweeping.storage_spec(sweep.storage, settings.state_dir)), host="127.0.0.1",
               port=port)
    return 0


def apply_best(params_file: str, sweep, settings: Settings) -> int:
    """Write the best trial's values into `params_file` (only those lines change) and print the diff."""
    study = open_existing(sweep, settings)
    if study is None:
        return 1
    try:
        best = study.best_trial
    except ValueError:
        print(f"flowtune sweep: study {sweep.study!r} has no completed trial yet", file=sys.stderr)
        return 1
    path = Path(params_file)
    before = path.read_text(encoding="utf-8")
    try:
        after = set_scalars(before, sweep.values_of(best.params))
    except ValueError as exc:
        print(f"flowtune sweep apply: {params_file}: {exc}", file=sys.stderr)
        return 1
    path.write_text(after, encoding="utf-8")
    sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                               f"a/{params_file}", f"b/{params_file}"))
    print(f"\nbest trial #{best.number} (dev score {best.value:.4f}) written to {params_file}; review and commit it")
    return 0


def yaml_scalar(value) -> str:
    """`value` as YAML writes it in flow style (1.0e-05, true, 'text' where quoting is needed)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n").removesuffix("\n...")


def set_scalars(text: str, values: dict[str, object]) -> str:
    """`text` (a params file) with each dotted key's scalar replaced, every other byte kept (comments,
    spacing, order): the value is edited on its own line, padded so a trailing comment keeps its column.

    ValueError when a key is not found as a `key: value` line (e.g. written in flow style), or when the
    result does not load back with exactly the new values.
    """
    lines = text.splitlines(keepends=True)
    for key, value in values.items():
        index = find_key_line(lines, key.split("."))
        lines[index] = replace_value(lines[index], yaml_scalar(value))
    result = "".join(lines)
    loaded = yaml.safe_load(result)
    for key, value in values.items():
        node = loaded
        for part in key.split("."):
            node = node[part]
        if node != value:
            raise ValueError(f"{key}: could not be set to {value!r} by editing its line (it reads back as {node!r})")
    return result


LINE = re.compile(r"^(?P<indent>[ \t]*)(?P<key>[A-Za-z0-9_\-]+):(?P<gap>[ \t]*)(?P<value>[^#\n]*?)(?P<pad>[ \t]*)"
                  r"(?P<comment>#.*)?(?P<end>\n?)$")


def find_key_line(lines: list[str], parts: list[str]) -> int:
    """Index of the line of the last of `parts`: each part is a direct child of the previous one's block."""
    start, end, found = 0, len(lines), -1
    for depth, part in enumerate(parts):
        keyed = [(i, m) for i in range(start, end)
                 if (m := LINE.match(lines[i])) and not lines[i].lstrip().startswith("#")]
        child_indent = len(keyed[0][1]["indent"]) if keyed else 0
        found = next((i for i, m in keyed if m["key"] == part and len(m["indent"]) == child_indent), -1)
        if found < 0:
            raise ValueError(f"{'.'.join(parts)}: no `{part}:` line under {'.'.join(parts[:depth]) or 'the top level'}")
        start, end = found + 1, block_end(lines, found, child_indent)
    return found


def block_end(lines: list[str], index: int, indent: int) -> int:
    """The first line after `index` indented no deeper than `indent` (blank and comment lines skipped)."""
    for later in range(index + 1, len(lines)):
        stripped = lines[later].strip()
        if stripped and not stripped.startswith("#") and len(lines[later]) - len(lines[later].lstrip()) <= indent:
            return later
    return len(lines)


def replace_value(line: str, value: str) -> str:
    match = LINE.match(line)
    if match is None or not match["value"]:
        raise ValueError(f"not a `key: value` line: {line.strip()!r}")
    old = match["value"] + match["pad"]
    if match["comment"]:  # keep the comment's column when the new value fits, else one space before it
        value = value.ljust(len(old)) if len(value) < len(old) else value + " "
    return f"{match['indent']}{match['key']}:{match['gap']}{value}{match['comment'] or ''}{match['end']}"
