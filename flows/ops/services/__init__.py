"""Local services for flowtune: SeaweedFS (the S3 API for DVC and the registry), a Prefect server and
a Prefect worker of the process work pool `flowtune-local` (it runs deployed and scheduled flow runs).

`up`, `down` and `status` are idempotent. `up` leaves a service alone when its pid file points at a
live process of that service, and otherwise starts it in its own process group in the background,
logging to `<state_dir>/logs/<name>.log` with its pid in `<state_dir>/<name>.pid`. Data stays under
`<state_dir>/` (git-ignored, mode 0700: only its owner may read the objects, the Prefect DB and the
logs), so `down` then `up` keeps objects, models and flow runs. Every file holding a secret (`.env`,
`.dvc/config.local`, `<state_dir>/s3.json`) is created 0600.

- S3 credentials: taken from the settings / `.env`; generated once into `./.env` (mode 0600) when
  missing. SeaweedFS gets them through `<state_dir>/s3.json`, so anonymous requests are denied.
  Its volume and filer ports demand JWTs signed with keys generated once into
  `<state_dir>/security.toml` (0600, read by weed from its working directory), the master's HTTP admin
  API is off, and its gRPC ports demand mutual TLS with a per-install CA (`<state_dir>/tls/`): only the
  S3 gateway reaches stored data, and admin work (`weed_shell`) goes over gRPC with our certificate.
- Prefect API: basic auth with `PREFECT_API_AUTH_STRING` (`admin:<random>`), generated once into
  `./.env` with the S3 keys and given to the server as `PREFECT_SERVER_API_AUTH_STRING`; the worker,
  `flowtune run` and `service_env` clients send it. The UI asks for that whole string.
- Every SeaweedFS listener (HTTP and gRPC of master, volume, filer and S3) comes from the settings and
  the Iceberg/Lance listeners are off, so two checkouts with different ports can run side by side.
- Prefect server: SQLite under `<state_dir>/prefect/` by default. To use PostgreSQL, set
  `PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER:PASS@HOST:5432/DB` in the
  environment or in `./.env` (the server runs in the current directory and reads it); it is passed
  through untouched.
- Existing services: with `FLOWTUNE_S3_ENDPOINT_URL` set, SeaweedFS is not started: the endpoint and
  its buckets are only checked (and DVC is wired to it). With `PREFECT_API_URL` pointing anywhere but
  the local `prefect_host:prefect_port`, the Prefect server is not started, only health-checked.
- DVC: `.dvc/config.local` (mode 0600) points the default remote `storage` at the S3 endpoint.
- Worker: `prefect worker start --pool flowtune-local --type process` in this checkout (it creates the
  pool on first start), also against an external Prefect API; `FLOWTUNE_START_WORKER=false` skips it.
  `up` also creates the global concurrency limit `gpu` (one slot per GPU, one on a CPU-only machine)
  that the train stage holds.

The code: flows/ops/services/config.py (credentials, `.env`, `.dvc/config.local`, `service_env`),
flows/ops/services/processes.py (pid files, start/stop, health waiting), flows/ops/services/definitions.py
(SeaweedFS, Prefect server and worker, buckets, the `gpu` limit, health checks); this module holds
the commands and re-exports what the rest of flowtune uses (`from flows.ops import services`).
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.names import ACCELERATOR_LIMIT, TRAIN_POOL, WORK_POOL
from flows.ops.services.config import (
    ACCESS_KEY_ENV,
    AUTH_STRING_ENV,
    DVC_REMOTE,
    ENV_FILE,
    PREFECT_USER,
    SECRET_KEY_ENV,
    _state,
    dvc_local_config,
    ensure_credentials,
    ensure_seaweed_security,
    prefect_auth_env,
    prefect_auth_header,
    prefect_is_local,
    s3_identities,
    s3_is_local,
    service_env,
    wire_dvc_remote,
    write_private,
)
from flows.ops.services.definitions import (
    EXTERNAL_TIMEOUT_S,
    PREFECT_TIMEOUT_S,
    S3_TIMEOUT_S,
    WORKER_TIMEOUT_S,
    _healthy,
    accelerator_slots,
    buckets,
    ensure_accelerator_limit,
    prefect_check,
    prefect_server,
    prefect_worker,
    s3_check_buckets,
    s3_ensure_buckets,
    seaweedfs,
    seed_prefect_database,
    weed_shell,
    worker_check,
    worker_name,
)
from flows.ops.services.processes import (
    LOG_MARKER,
    MARKERS,
    STOP_GRACE_BY_SERVICE,
    STOP_GRACE_S,
    ConfigError,
    Service,
    ServiceError,
    _group_alive,
    _locked,
    check_ports,
    log_tail,
    private_dir,
    running_pid,
    start,
    stop,
    wait_healthy,
    was_started,
)
from tasks.settings import Settings

__all__ = [
    # commands
    "up", "down", "status", "install_units", "prepare_seaweedfs", "start_worker", "format_status", "services_main",
    "main", "ui_login_hint", "up_label_studio", "label_studio_status",
    # names (flows/names.py)
    "ACCELERATOR_LIMIT", "TRAIN_POOL", "WORK_POOL",
    # config
    "ACCESS_KEY_ENV", "AUTH_STRING_ENV", "DVC_REMOTE", "ENV_FILE", "PREFECT_USER", "SECRET_KEY_ENV",
    "dvc_local_config", "ensure_credentials",
    "ensure_seaweed_security", "prefect_auth_env", "prefect_auth_header",
    "prefect_is_local", "s3_identities", "s3_is_local", "service_env", "wire_dvc_remote", "write_private",
    # definitions
    "EXTERNAL_TIMEOUT_S", "PREFECT_TIMEOUT_S", "S3_TIMEOUT_S", "WORKER_TIMEOUT_S", "accelerator_slots", "buckets",
    "ensure_accelerator_limit", "prefect_check", "prefect_server", "prefect_worker", "s3_check_buckets",
    "s3_ensure_buckets", "seaweedfs", "weed_shell", "worker_check", "worker_name",
    # processes
    "LOG_MARKER", "MARKERS", "STOP_GRACE_BY_SERVICE", "STOP_GRACE_S", "ConfigError", "Service", "ServiceError",
    "_group_alive",  # tests/helpers.py
    "check_ports", "log_tail", "private_dir", "running_pid", "start", "stop", "wait_healthy",
]


# ---------------------------------------------------------------- commands


def _services_to_start(settings: Settings) -> list[Service]:
    """The local services that `up` must start now (not external, not already running)."""
    wanted = ([seaweedfs(settings)] if s3_is_local(settings) else []) + \
             ([prefect_server(settings)] if prefect_is_local(settings) else [])
    return [service for service in wanted if running_pid(settings, service.name) is None]


def up(settings: Settings | None = None, with_: tuple[str, ...] = ()) -> dict:
    """Start what is not running, wait until healthy, create the buckets and wire the DVC remote.

    Returns the endpoints: `s3_endpoint`, `buckets`, `prefect_api_url`, `prefect_ui_url`, and
    `dvc_config` (the written `.dvc/config.local`, None outside a DVC repository). Nothing is
    exported to this process's environment; use `service_env` for client processes.
    """
    settings = ensure_credentials(settings or Settings())
    with _locked(settings):
        prepare_seaweedfs(settings)
        to_start = _services_to_start(settings)
        for service in to_start:  # all ports first: a clash must not leave half the services started
            check_ports(service)
        if any(service.name == "prefect-server" for service in to_start):
            seed_prefect_database(_state(settings) / "prefect")
        for service in to_start:  # both start together: Prefect's start-up is the long one
            start(settings, service)
        if s3_is_local(settings):
            wait_healthy(settings, "seaweedfs", s3_ensure_buckets, S3_TIMEOUT_S, managed=True)
        else:
            wait_healthy(settings, "s3", s3_check_buckets, EXTERNAL_TIMEOUT_S, managed=False)
        dvc_config = wire_dvc_remote(settings)
        local_prefect = prefect_is_local(settings)
        wait_healthy(settings, "prefect-server" if local_prefect else "prefect", prefect_check,
                     PREFECT_TIMEOUT_S if local_prefect else EXTERNAL_TIMEOUT_S, managed=local_prefect)
        start_worker(settings)
        slots = ensure_accelerator_limit(settings)
        if "label-studio" in with_:
            up_label_studio(settings)
    return {"gpu_slots": slots,
            "s3_endpoint": settings.endpoint_url, "buckets": buckets(settings),
            "prefect_api_url": settings.api_url, "prefect_ui_url": settings.ui_url,
            "dvc_config": str(dvc_config) if dvc_config else None}


def up_label_studio(settings: Settings) -> None:
    """Install (once) and start Label Studio, or only check an external one (flows/ops/services/labelstudio.py)."""
    from flows.ops.services import labelstudio

    settings = labelstudio.ensure_credentials(settings)
    if not labelstudio.is_local(settings):
        wait_healthy(settings, "label-studio", labelstudio.check, EXTERNAL_TIMEOUT_S, managed=False)
        return
    if running_pid(settings, labelstudio.NAME) is not None:
        wait_healthy(settings, labelstudio.NAME, labelstudio.check, labelstudio.FIRST_START_TIMEOUT_S, managed=True)
        return
    labelstudio.install(settings)
    definition = labelstudio.service(settings)
    check_ports(definition)  # Label Studio itself would silently take the next free port
    start(settings, definition)
    wait_healthy(settings, labelstudio.NAME, labelstudio.check_starting, labelstudio.FIRST_START_TIMEOUT_S,
                 managed=True)
    labelstudio.check(settings)  # up: now a refusal is a wrong token, or another server on the port


def prepare_seaweedfs(settings: Settings) -> None:
    """The files a local `weed server` reads at start: its S3 identities, JWT keys and TLS, its data folder."""
    if s3_is_local(settings):
        write_private(_state(settings) / "s3.json", json.dumps(s3_identities(settings), indent=2))
        ensure_seaweed_security(settings)
        (_state(settings) / "seaweedfs").mkdir(exist_ok=True)


def install_units(settings: Settings, dest=None) -> list:
    """`services install`: what `up` prepares before starting, then the systemd units (flows/ops/services/units.py)."""
    from flows.ops.services.units import install

    settings = ensure_credentials(settings)
    with _locked(settings):
        prepare_seaweedfs(settings)
        if prefect_is_local(settings):
            seed_prefect_database(_state(settings) / "prefect")
        return install(settings, dest)


def start_worker(settings: Settings) -> None:
    """Start the worker (once the Prefect API answers) unless it runs already or is switched off."""
    if not settings.start_worker:
        return
    if running_pid(settings, "prefect-worker") is None:
        start(settings, prefect_worker(settings))
    wait_healthy(settings, "prefect-worker", worker_check, WORKER_TIMEOUT_S, managed=True)


def down(settings: Settings | None = None) -> None:
    """Stop the local services, all at once (SeaweedFS alone needs about 15 s). Data stays.

    Stopping the worker also stops the flow runs it is executing (they are its child processes)."""
    settings = settings or Settings()
    if not settings.state_dir.exists():
        return  # never started here: nothing to stop, and no state dir to create
    with _locked(settings):
        stop(settings, "prefect-worker", "prefect-server", "seaweedfs", "label-studio")


def status(settings: Settings | None = None) -> dict[str, dict]:
    """Per service: `pid` (None if not running here or external), `url` and `healthy`."""
    settings = settings or Settings()
    s3_ok = bool(settings.s3_access_key_id and settings.s3_secret_access_key) and \
        _healthy(s3_check_buckets, settings)
    report = {
        "seaweedfs": {"pid": running_pid(settings, "seaweedfs"), "url": settings.endpoint_url, "healthy": s3_ok},
        "prefect-server": {"pid": running_pid(settings, "prefect-server"), "url": settings.ui_url,
                           "healthy": _healthy(prefect_check, settings)},
    }
    report.update(label_studio_status(settings))
    if settings.start_worker:
        report["prefect-worker"] = {"pid": running_pid(settings, "prefect-worker"),
                                    "url": f"pool {WORK_POOL} as {worker_name(settings)}",
                                    "healthy": _healthy(worker_check, settings)}
    return report


def label_studio_status(settings: Settings) -> dict[str, dict]:
    """Label Studio's row, only where it is external or was started here and not stopped since: it runs on
    demand (`up --with label-studio`), so a checkout that never asked for it, or stopped it, must not report it
    unhealthy; one that died after its start is."""
    from flows.ops.services import labelstudio

    pid = running_pid(settings, labelstudio.NAME)
    if pid is None and labelstudio.is_local(settings) and not was_started(settings, labelstudio.NAME):
        return {}
    checked = labelstudio.ensure_credentials(settings, generate=False)
    return {labelstudio.NAME: {"pid": pid, "url": settings.labelling_url,
                               "healthy": _healthy(labelstudio.check, checked)}}


def format_status(report: dict[str, dict]) -> str:
    """One readable line per service: name, pid, healthy, url."""
    return "\n".join(f"{name:<15} pid={state['pid'] or '-':<8} healthy={'yes' if state['healthy'] else 'no':<4} "
                     f"{state['url']}" for name, state in report.items())


def build_services_parser() -> argparse.ArgumentParser:
    """The parser of `flowtune services` (apart, so that docs/hooks/reference.py documents it)."""
    parser = argparse.ArgumentParser(prog="flowtune services",
                                     description="Start, stop or inspect the local services: SeaweedFS (S3), "
                                                 "Prefect server and worker.")
    sub = parser.add_subparsers(dest="action", required=True)
    up_parser = sub.add_parser("up", help="start what is not running, create buckets, wire the DVC remote")
    up_parser.add_argument("--with", dest="with_", action="append", choices=["label-studio"], default=[],
                           help="also start an optional service: label-studio (installed into its own venv under "
                                "the state dir on first use; the labelling loop, `flowtune label`)")
    sub.add_parser("down", help="stop the local services (data stays)")
    sub.add_parser("status", help="pid, url and health of each service (exit 1 if one is unhealthy)")
    install = sub.add_parser("install", help="write user-level systemd units that start these services at boot "
                                             "(same commands as `up`, Restart=on-failure)")
    install.add_argument("--dest", help="folder for the unit files (default ~/.config/systemd/user)")
    return parser


def services_main(argv: list[str] | None = None) -> int:
    """`flowtune services up|down|status|install`; exit status 0 when the command succeeded / all are healthy."""
    args = build_services_parser().parse_args(argv)
    action = args.action
    settings = Settings()
    try:
        if action == "up":
            settings = ensure_credentials(settings)  # here, not only inside up: status below needs them
            info = up(settings, tuple(args.with_)) if args.with_ else up(settings)
            print(format_status(status(settings)))
            print(f"buckets: {', '.join(info['buckets'])}; Prefect UI: {info['prefect_ui_url']}")
            if settings.prefect_api_auth_string:
                print(ui_login_hint())
            print(f"concurrency limit '{ACCELERATOR_LIMIT}': {info['gpu_slots']} slot(s); "
                  "create the deployments with `flowtune deploy`")
            print(f"DVC remote '{DVC_REMOTE}': " + (f"wired in {info['dvc_config']}" if info["dvc_config"]
                                                    else "not wired (no .dvc/ in this directory)"))
            return 0
        if action == "install":
            from pathlib import Path

            written = install_units(settings, Path(args.dest) if args.dest else None)
            print("\n".join(f"wrote {path}" for path in written))
            names = " ".join(path.name for path in written)
            print(f"stop what `up` started (`flowtune services down`), then: systemctl --user daemon-reload && "
                  f"systemctl --user enable --now {names}; `loginctl enable-linger $USER` starts them at boot "
                  "without a login")
            return 0
        if action == "down":
            down(settings)
            print(f"services stopped (data kept under {settings.state_dir}/)")
            return 0
        report = status(settings)
        print(format_status(report))
        return 0 if all(state["healthy"] for state in report.values()) else 1
    except ServiceError as exc:
        print(f"flowtune services {action}: {exc}", file=sys.stderr)
        return 1


def ui_login_hint() -> str:
    """How to log in to the Prefect UI, naming where the password is, never the password itself."""
    return (f"Prefect UI login: it asks for '{PREFECT_USER}:<password>', the whole value of {AUTH_STRING_ENV} "
            f"in {ENV_FILE.resolve()} (user '{PREFECT_USER}')")


main = services_main  # `python -m flows.ops.services` (flows/ops/services/__main__.py), `flowtune services`
