"""Local services, started for the user: SeaweedFS (S3 API) and a Prefect server.

`up` is idempotent: a service whose pid file points at a live, healthy process is left alone. Each
service runs in its own process group in the background, logs to `<state_dir>/logs/`, and keeps its
data under `<state_dir>/` (git-ignored), so `down` then `up` keeps models, data and flow runs.

The Prefect server uses SQLite under `<state_dir>/prefect/` unless
`PREFECT_SERVER_DATABASE_CONNECTION_URL` is set (e.g. PostgreSQL), which is passed through as is.
When `FLOWTUNE_S3_ENDPOINT_URL` or `PREFECT_API_URL` point at existing services, those are only
checked, never started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import Settings, s3_client

ENV_FILE = Path(".env")


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    ports: list[int]


# ---------------------------------------------------------------- credentials and config files


def ensure_credentials(settings: Settings, env_file: Path = ENV_FILE) -> Settings:
    """Return settings with S3 keys: from `settings`, else from `env_file`, else newly generated
    into `env_file` (mode 0600, appended: other lines are kept)."""
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        return settings
    keys = {"s3_access_key_id", "s3_secret_access_key"}
    from_file = Settings(_env_file=env_file)
    if not (from_file.s3_access_key_id and from_file.s3_secret_access_key):
        existing = env_file.read_text() if env_file.exists() else ""
        separator = "\n" if existing and not existing.endswith("\n") else ""
        env_file.write_text(
            existing + separator + f"FLOWTUNE_S3_ACCESS_KEY_ID=flowtune-{secrets.token_hex(4)}\n"
            f"FLOWTUNE_S3_SECRET_ACCESS_KEY={secrets.token_hex(24)}\n"
        )
        env_file.chmod(0o600)
        from_file = Settings(_env_file=env_file)
    return settings.model_copy(update=from_file.model_dump(include=keys))


def s3_identities(settings: Settings) -> dict:
    """SeaweedFS `-s3.config`: one identity with our keys, so anonymous requests are denied."""
    return {
        "identities": [{
            "name": "flowtune",
            "credentials": [{"accessKey": settings.s3_access_key_id, "secretKey": settings.secret_key()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    }


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def dvc_local_config(settings: Settings) -> str:
    """`.dvc/config.local`: where the `storage` remote really is and its keys (never committed)."""
    return (
        "['remote \"storage\"']\n"
        f"    url = s3://{settings.dvc_bucket}/dvcstore\n"
        f"    endpointurl = {settings.endpoint_url}\n"
        f"    access_key_id = {settings.s3_access_key_id}\n"
        f"    secret_access_key = {settings.secret_key()}\n"
        f"    region = {settings.s3_region}\n"
    )


# ---------------------------------------------------------------- service definitions


def _binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"`{name}` not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


def seaweedfs(settings: Settings) -> Service:
    state = settings.state_dir.resolve()
    ports = [settings.s3_port, settings.seaweed_master_port, settings.seaweed_volume_port, settings.seaweed_filer_port]
    # SeaweedFS serves gRPC on each HTTP port + 10000 (explicit here so the rule is visible).
    for port in list(ports):
        if port + 10000 > 65535:
            raise ValueError(f"SeaweedFS port {port} is too high: its gRPC port {port + 10000} would exceed 65535")
        ports.append(port + 10000)
    command = [
        _binary("weed"), "server", f"-dir={state / 'seaweedfs'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={settings.s3_port}", f"-s3.config={state / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
        f"-master.port={settings.seaweed_master_port}", f"-volume.port={settings.seaweed_volume_port}",
        f"-filer.port={settings.seaweed_filer_port}", f"-s3.port.grpc={settings.s3_port + 10000}",
        f"-master.port.grpc={settings.seaweed_master_port + 10000}",
        f"-volume.port.grpc={settings.seaweed_volume_port + 10000}",
        f"-filer.port.grpc={settings.seaweed_filer_port + 10000}",
        # Small volumes, many of them: with the defaults a second bucket gets "No writable volumes".
        "-master.volumeSizeLimitMB=64", "-volume.max=200", "-master.telemetry=false",
    ]
    return Service("seaweedfs", command, {}, ports)


def prefect_server(settings: Settings) -> Service:
    env = {"PREFECT_HOME": str((settings.state_dir / "prefect").resolve()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "prefect", "server", "start",
               "--host", settings.prefect_host, "--port", str(settings.prefect_port)]
    return Service("prefect-server", command, env, [settings.prefect_port])


def service_env(settings: Settings) -> dict[str, str]:
    """Environment for a Prefect client process (the flow, the CLI) talking to our server."""
    return {
        "PREFECT_API_URL": settings.api_url,
        "PREFECT_HOME": str((settings.state_dir / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


# ---------------------------------------------------------------- process management


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid from the service's pid file if that process is alive, else None."""
    try:
        pid = int(_pid_file(settings, name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(settings: Settings, service: Service) -> int:
    """Start a service in its own process group unless it is already running; return its pid."""
    pid = running_pid(settings, service.name)
    if pid:
        return pid
    for port in service.ports:
        if _port_taken(port):
            raise RuntimeError(
                f"cannot start {service.name}: port {port} on 127.0.0.1 is already in use by another "
                "process (stop it, or choose other ports in .env, see infra/local/README.md)"
            )
    log = _log_file(settings, service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not (service.name == "prefect-server" and k == "PREFECT_API_URL")}
    with open(log, "ab") as handle:
        process = subprocess.Popen(service.command, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**env, **service.env}, start_new_session=True)
    _pid_file(settings, service.name).write_text(str(process.pid))
    return process.pid


def stop(settings: Settings, name: str, grace_seconds: float = 15) -> bool:
    """Stop a service's process group (TERM, then KILL after the grace period). True if it ran."""
    pid = running_pid(settings, name)
    _pid_file(settings, name).unlink(missing_ok=True)
    if not pid:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child: a zombie still answers kill(0)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def log_tail(settings: Settings, name: str, lines: int = 20) -> str:
    log = _log_file(settings, name)
    text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
    return f"{log}:\n" + "\n".join(text)


def wait_until(check, settings: Settings, name: str, timeout: float) -> None:
    """Poll `check()` until it returns True; fail with the service's log if it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if name and not running_pid(settings, name):
            raise RuntimeError(f"{name} exited during start-up; last lines of {log_tail(settings, name)}")
        time.sleep(0.5)
    raise RuntimeError(f"{name or 'service'} not healthy after {timeout:.0f}s; last lines of {log_tail(settings, name)}")


# ---------------------------------------------------------------- health checks


def s3_ready(settings: Settings) -> bool:
    """True when both buckets exist (created here if missing) and accept a write."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = s3_client(settings)
        for bucket in (settings.dvc_bucket, settings.registry_bucket):
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
            client.put_object(Bucket=bucket, Key=".flowtune-probe", Body=b"ok")
            client.delete_object(Bucket=bucket, Key=".flowtune-probe")
        return True
    except (BotoCoreError, ClientError):
        return False


def prefect_ready(settings: Settings) -> bool:
    import httpx

    try:
        return httpx.get(f"{settings.api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------- commands


def up(settings: Settings | None = None) -> dict:
    """Start (or find running) S3 and Prefect, create buckets, wire the DVC remote."""
    settings = ensure_credentials(settings or Settings())
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.s3_endpoint_url is None:
        write_private(settings.state_dir / "s3.json", json.dumps(s3_identities(settings), indent=2))
        (settings.state_dir / "seaweedfs").mkdir(exist_ok=True)
        start(settings, seaweedfs(settings))
    wait_until(lambda: s3_ready(settings), settings, "seaweedfs" if settings.s3_endpoint_url is None else "", 90)
    write_private(Path(".dvc/config.local"), dvc_local_config(settings))
    if settings.prefect_api_url is None:
        start(settings, prefect_server(settings))
    wait_until(lambda: prefect_ready(settings), settings, "prefect-server" if settings.prefect_api_url is None else "", 120)
    return {"s3": settings.endpoint_url, "buckets": [settings.dvc_bucket, settings.registry_bucket],
            "prefect_api": settings.api_url, "prefect_ui": settings.ui_url}


def down(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    for name in ("prefect-server", "seaweedfs"):
        stop(settings, name)


def status(settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    s3_ok = bool(settings.s3_access_key_id) and s3_ready(settings)
    return {
        "seaweedfs": {"pid": running_pid(settings, "seaweedfs"), "url": settings.endpoint_url, "healthy": s3_ok},
        "prefect-server": {"pid": running_pid(settings, "prefect-server"), "url": settings.ui_url,
                           "healthy": prefect_ready(settings)},
    }


def services_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowtune services", description="local SeaweedFS + Prefect server")
    parser.add_argument("action", choices=["up", "down", "status"])
    action = parser.parse_args(argv).action
    if action == "up":
        info = up()
        print(f"S3 (SeaweedFS):  {info['s3']}  buckets: {', '.join(info['buckets'])}")
        print(f"Prefect UI:      {info['prefect_ui']}")
        return 0
    if action == "down":
        down()
        print("services stopped (data kept under .flowtune/)")
        return 0
    report = status()
    for name, state in report.items():
        print(f"{name:15} pid={state['pid'] or '-':<8} healthy={'yes' if state['healthy'] else 'no ':<4} {state['url']}")
    return 0 if all(s["healthy"] for s in report.values()) else 1


if __name__ == "__main__":
    sys.exit(services_main())
