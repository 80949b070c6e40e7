"""The `flowtune` command line: services, pipeline runs, sweeps, the registry and predictions."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.cli.audit import add_audit_parser
from flows.cli.data import add_data_parser
from flows.cli.label import add_label_parser
from flows.cli.outcome import print_outcome
from flows.cli.predict import add_predict_parser
from flows.cli.registry import add_registry_parser
from flows.cli.serve import add_serve_parser
from flows.cli.sweep import add_sweep_parser
from flows.names import ACCELERATOR_LIMIT, PIPELINE_FLOW, TRAIN_POOL, WORK_POOL
from tasks.settings import Settings


def _prefect_env(settings: Settings) -> None:
    """Point this process's Prefect client at our server before Prefect is imported."""
    from flows.ops.services import service_env

    os.environ.update(service_env(settings))


def cmd_run(args: argparse.Namespace) -> int:
    settings = Settings()
    _prefect_env(settings)
    from flows.orchestration.pipeline import training_pipeline

    if args.params_file:  # a committed params file: the run works in a clean checkout of HEAD (workspace.py)
        state = training_pipeline(push=not args.no_push, workspace="isolated", params_file=args.params_file,
                             return_state=True)
    else:
        state = training_pipeline(push=not args.no_push, return_state=True)
    result = print_outcome("run", state, settings)
    if result is not None and result.get("unchanged"):
        print(f"Registry:              {result['message']}")
    elif result is not None:
        print(f"Registered model:      {result['model']} v{result['version']} "
              f"(s3://{settings.registry_bucket}/{settings.registry_prefix}/{result['model']}/{result['version']}/, "
              "alias champion)")
    if args.params_file:
        print("Metrics:               flowtune registry show <model>  (the run's checkout is removed on success)")
    else:
        print("Metrics:               dvc metrics show   (details: data/metrics/eval.json)")
    return 0 if result is not None else 1


def prefect_main(args: list[str]) -> int:
    """`flowtune prefect ...`: Prefect's own command line, pointed at this checkout's server and logged in
    (PREFECT_API_URL and the API's auth string from .env), whatever port `services up` used."""
    import subprocess

    from flows.ops.services import service_env

    env = {**os.environ, **service_env(Settings())}
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env).returncode


def trigger_mismatches(prefect_yaml: str = "prefect.yaml", params_file: str = "params.yaml") -> list[str]:
    """Deployment triggers of prefect.yaml about a `flowtune.model.<name>` other than params.yaml's model: they
    would never fire for the model the deployment trains (a renamed `registry.model_name`)."""
    from pathlib import Path

    import yaml

    from tasks.params import load_params

    model = f"flowtune.model.{load_params(params_file).registry.model_name}"
    found = []
    for deployment in yaml.safe_load(Path(prefect_yaml).read_text(encoding="utf-8"))["deployments"]:
        for trigger in deployment.get("triggers", []):
            wanted = (trigger.get("match") or {}).get("prefect.resource.id", model)
            if str(wanted).startswith("flowtune.model.") and wanted != model:
                found.append(f"deployment {deployment['name']!r}: trigger {trigger.get('name')!r} matches {wanted}, "
                             f"but {params_file} trains {model}: edit its `match` in {prefect_yaml}")
    return found


def cmd_deploy(args: argparse.Namespace) -> int:
    """Create or update the deployments of prefect.yaml on our Prefect server (`prefect deploy --all`)."""
    import subprocess

    for problem in trigger_mismatches():
        print(f"flowtune deploy: warning: {problem}", file=sys.stderr)

    from flows.ops.services import ServiceError, ensure_accelerator_limit

    settings = Settings()
    try:
        slots = ensure_accelerator_limit(settings)
    except (ServiceError, OSError) as exc:
        print(f"flowtune deploy: the Prefect API at {settings.api_url} is not usable ({exc}); "
              "run `flowtune services up` first", file=sys.stderr)
        return 1
    from flows.ops.services import service_env

    env = {**os.environ, **service_env(settings)}
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    # The train-stage deployment's pool has no local worker; it must exist before a deployment targets it.
    pools = subprocess.run([*prefect, "work-pool", "inspect", TRAIN_POOL], env=env, capture_output=True)
    if pools.returncode:
        subprocess.run([*prefect, "work-pool", "create", TRAIN_POOL, "--type", "process"], env=env, check=True,
                       capture_output=True)
    result = subprocess.run([*prefect, "deploy", "--all"], env=env)
    if result.returncode == 0:
        print(f"deployments created on {settings.ui_url}/deployments (worker pool {WORK_POOL}, "
              f"'{ACCELERATOR_LIMIT}' limit {slots} slot(s)); run one now with "
              f"`flowtune prefect deployment run {PIPELINE_FLOW}/nightly`; `flowtune notify` posts failed "
              "runs, and a nightly run missing for 26 hours, to a webhook")
    return result.returncode


WEBHOOK_URL_ENV = "FLOWTUNE_WEBHOOK_URL"


def webhook_url_from_user(args: argparse.Namespace) -> str:
    """The webhook URL from the environment or stdin (a prompt that does not echo on a terminal): never
    from the command line, where shell history and `ps` would keep its token."""
    import getpass

    if args.webhook_url:
        sys.exit("flowtune notify: error: the webhook URL carries a token; pass it on stdin or in "
                 f"{WEBHOOK_URL_ENV}, not on the command line (shell history, `ps`)")
    url = os.environ.get(WEBHOOK_URL_ENV) or (
        getpass.getpass("webhook URL (not echoed): ") if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if not url.startswith(("http://", "https://")):
        sys.exit(f"flowtune notify: error: expected an http(s) webhook URL on stdin or in {WEBHOOK_URL_ENV}")
    return url


def cmd_notify(args: argparse.Namespace) -> int:
    """Install the failure-notification automation (flows/ops/notify.py) on our Prefect server."""
    settings = Settings()
    url = webhook_url_from_user(args)
    _prefect_env(settings)
    from flows.ops.notify import (
        AUTOMATION_NAME,
        DRIFT_AUTOMATION_NAME,
        FLOWS,
        MISSING_AUTOMATION_NAME,
        NIGHTLY_DEPLOYMENT,
        install,
    )

    if not args.missing_run_hours > 0:
        sys.exit("flowtune notify: error: --missing-run-hours must be > 0")
    try:
        failed_id, missing_id, drift_id = install(url, args.missing_run_hours)
    except Exception as exc:  # noqa: BLE001 - any client error means the server is not usable
        print(f"flowtune notify: {type(exc).__name__}: {exc} (is the Prefect server at {settings.api_url} up? "
              "`flowtune services up`)", file=sys.stderr)
        return 1
    print(f"automation {AUTOMATION_NAME!r} ({failed_id}): a Failed or Crashed run of {', '.join(FLOWS)} "
          "is posted to the webhook")
    print(f"automation {MISSING_AUTOMATION_NAME!r} ({missing_id}): so is {args.missing_run_hours:g} hours without "
          f"a Completed run of {PIPELINE_FLOW}/{NIGHTLY_DEPLOYMENT}")
    print(f"automation {DRIFT_AUTOMATION_NAME!r} ({drift_id}): and each drift the monitor finds, with what drifted")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Apply the retention rules (`gc:` of the params file): a dry run unless --apply."""
    from flows.ops.gc.apply import run_gc
    from flows.ops.storage import StorageError, check_storage
    from tasks.params import ParamsError, load_params

    try:
        rules = load_params(args.params_file).gc
    except ParamsError as exc:
        print(f"flowtune gc: {exc}", file=sys.stderr)
        return 1
    if args.keep_days is not None:
        rules = rules.model_copy(update={"keep_days": args.keep_days})
    settings = Settings()
    try:
        check_storage(settings)
    except (StorageError, RuntimeError) as exc:  # RuntimeError: no credentials set
        print(f"flowtune gc: {exc}", file=sys.stderr)
        return 1
    report = run_gc(settings, rules, apply=args.apply)
    return 1 if report.failed else 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run the drift monitor flow (flows/ops/monitor.py) once, here: print its table, optionally save its report.
    Drift is a finding, not an error: the exit status is 0 whenever the monitor ran."""
    import json

    from tasks.params import ParamsError, load_params, parse_duration

    try:
        load_params(args.params_file)
        if args.since:
            parse_duration(args.since)
    except (ParamsError, ValueError) as exc:
        print(f"flowtune monitor: {exc}", file=sys.stderr)
        return 2
    settings = Settings()
    _prefect_env(settings)
    from flows.ops.monitor import drift_monitor, text_table

    try:
        state = drift_monitor(since=args.since, model=args.model, params_file=args.params_file, return_state=True)
    except Exception as exc:  # noqa: BLE001 - no Prefect API to run the flow against
        print(f"flowtune monitor: {type(exc).__name__}: {exc} (is the Prefect server at {settings.api_url} up? "
              "`flowtune services up`)", file=sys.stderr)
        return 1
    if not state.is_completed():
        print(f"flowtune monitor: the run is {state.type.value}: {state.message}", file=sys.stderr)
        return 1
    report = state.result()
    print(text_table(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
        print(f"report: {args.json}")
    print(f"Prefect UI (flow run): {settings.ui_url}/runs/flow-run/{state.state_details.flow_run_id}")
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    """The last run's training curve and confusion matrix as one page that opens offline (flows/ops/plots.py)."""
    from flows.ops.plots import PlotsError, write_page
    from tasks.params import ParamsError, load_params

    try:
        drawn = write_page(load_params(args.params_file), Path(args.out))
    except (ParamsError, PlotsError) as exc:
        print(f"flowtune plots: {exc}", file=sys.stderr)
        return 1
    print(f"{', '.join(drawn)} -> {args.out} (self-contained: open it in a browser, no internet needed)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="start/stop/inspect local SeaweedFS + Prefect server", add_help=False)
    sub.add_parser("prefect", help="Prefect's own CLI against this checkout's server, logged in (e.g. "
                   "`flowtune prefect deployment run flowtune-pipeline/nightly`)", add_help=False)
    run = sub.add_parser("run", help="run the whole pipeline as a Prefect flow in this checkout (reads ./params.yaml)")
    run.add_argument("--no-push", action="store_true", help="do not dvc push at the end")
    run.add_argument("--params-file", help="run with this committed params file instead of ./params.yaml (e.g. "
                     "params-sentiment.yaml), in an isolated checkout of HEAD; its data and model go to the DVC "
                     "remote and the registry, not into this checkout")
    run.set_defaults(func=cmd_run)
    deploy = sub.add_parser("deploy", help="create/update the Prefect deployments of prefect.yaml (nightly "
                            "retraining, data refresh, champion evaluation) on the local Prefect server")
    deploy.set_defaults(func=cmd_deploy)
    notify = sub.add_parser("notify", help="post to a webhook when a flowtune flow run fails or crashes "
                            "(a Prefect automation with a Custom Webhook block)")
    notify.add_argument("--webhook-url", help=argparse.SUPPRESS)  # refused: its token would be on the command line
    notify.add_argument("--missing-run-hours", type=float, default=26.0,
                        help="notify when the nightly deployment has had no Completed run for this long (default 26)")
    notify.epilog = (f"The webhook (it receives JSON {{subject, text}}) is read from {WEBHOOK_URL_ENV} or stdin, "
                     "and kept in a Prefect secret.")
    notify.set_defaults(func=cmd_notify)
    gc = sub.add_parser("gc", help="delete what the retention rules (`gc:` in params.yaml) no longer keep: failed "
                        "workspaces, old registry versions (never an aliased one), orphan claims, old Data Docs and "
                        "run folders, unused DVC cache and remote objects, old Prefect flow runs, oversized service "
                        "logs, old sweep plots and studies; a dry run unless --apply")
    gc.add_argument("--apply", action="store_true", help="delete (default: only print what would go, with sizes)")
    gc.add_argument("--keep-days", type=int, help="keep runs younger than this (default: gc.keep_days)")
    gc.add_argument("--params-file", default="params.yaml", help="the params file whose `gc:` rules apply")
    gc.set_defaults(func=cmd_gc)
    monitor = sub.add_parser("monitor", help="compare captured serving traffic with the reference of the version that "
                             "answered it (drift per measure: a table, a JSON report, plots, and a "
                             "`flowtune.drift.detected` event that starts retraining when something drifted)")
    monitor.add_argument("--since", help="how far back to read, e.g. 24h, 7d (default: monitor.window)")
    monitor.add_argument("--model", help="only this model's traffic (default: every captured model)")
    monitor.add_argument("--json", metavar="FILE", help="also write the JSON report to FILE")
    monitor.add_argument("--params-file", default="params.yaml",
                         help="the params file whose `monitor:` section applies")
    monitor.set_defaults(func=cmd_monitor)
    plots = sub.add_parser("plots", help="the last run's training curve and confusion matrix as one HTML page that "
                           "opens offline (`dvc plots show` draws them too, but its page loads Vega from the internet)")
    plots.add_argument("--out", default="dvc_plots/offline.html", help="the page to write")
    plots.add_argument("--params-file", default="params.yaml", help="the params file (its paths: section)")
    plots.set_defaults(func=cmd_plots)
    add_registry_parser(sub)
    add_predict_parser(sub)
    add_serve_parser(sub)
    add_sweep_parser(sub)
    add_data_parser(sub)
    add_audit_parser(add_label_parser(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["services"]:
        from flows.ops.services import services_main

        return services_main(argv[1:]) or 0
    if argv[:1] == ["prefect"]:
        return prefect_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
