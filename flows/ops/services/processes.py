"""Generic process supervision for the local services: pid files, start/stop, health waiting.

A service is started in the background in its own process group (`start`), logging to
`<state_dir>/logs/<name>.log` (rotated past LOG_MAX_BYTES, `rotate_log`) with its pid in
`<state_dir>/<name>.pid`; `running_pid` believes a pid file only while its process is alive and is
that service; `stop` ends whole process groups;
`wait_healthy` polls a check and reports a crash with the service's log; `_locked` serializes
up/down on one state dir. Nothing here knows what SeaweedFS or Prefect are (flows/ops/services/definitions.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks.settings import Settings

STOP_GRACE_S = 15.0
# weed 4.48 always spends 15 s on SIGTERM: its filer's gRPC graceful stop waits for its own metadata
# subscriptions (S3 gateway, meta aggregator) until a built-in 15 s timeout. A little more grace lets
# it finish cleanly (about 15.1 s) instead of being SIGKILLed in the middle of its shutdown.
STOP_GRACE_BY_SERVICE = {"seaweedfs": 25.0}
LOG_MARKER = "----- flowtune services: starting"
# A service log past LOG_MAX_BYTES is rotated when the service starts (and by `flowtune gc`, with the
# `gc.log_max_mb` / `gc.log_keep` of the params file): <name>.log.1 .. .LOG_KEEP, older copies dropped,
# so each service's logs stay under (1 + LOG_KEEP) x LOG_MAX_BYTES plus what it writes between rotations.
LOG_MAX_BYTES = 50_000_000
LOG_KEEP = 3

# A word each service's command line contains: a pid file whose pid was reused is not believed.
MARKERS = {"seaweedfs": "weed", "prefect-server": "prefect", "prefect-worker": "prefect",
           "label-studio": "label_studio"}

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


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def was_started(settings: Settings, name: str) -> bool:
    """True while the service's pid file is there: started here and not stopped since (it may have died)."""
    return _pid_file(settings, name).is_file()


def _log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def rotated(log: Path, number: int) -> Path:
    return log.with_name(f"{log.name}.{number}")


def rotated_copies(log: Path) -> dict[int, Path]:
    """The rotated copies of `log` that exist: number -> path (`<name>.log.3` -> 3)."""
    found = {}
    for path in log.parent.glob(f"{log.name}.*") if log.parent.is_dir() else []:
        suffix = path.name[len(log.name) + 1:]
        if suffix.isdigit():
            found[int(suffix)] = path
    return found


def rotate_log(log: Path, max_bytes: int, keep: int, live: bool) -> int | None:
    """Rotate `log` to `.1` (shifting `.1` to `.2` ...) when it is larger than `max_bytes`, dropping the copies
    beyond `keep`; the bytes dropped, or None when the log was small enough to stay.

    `live`: a running service may hold the log open. Renaming it would leave the service writing into
    `.1`, so it is copied and truncated instead (the service opened it with O_APPEND: its next write
    lands at the new end). The lines written between the copy and the truncation are lost.
    """
    if not log.is_file() or log.stat().st_size <= max_bytes:
        return None
    copies = rotated_copies(log)
    dropped = 0
    for number in sorted(n for n in copies if n >= keep):
        dropped += copies[number].stat().st_size
        copies[number].unlink()
    for number in sorted((n for n in copies if n < keep), reverse=True):
        os.replace(copies[number], rotated(log, number + 1))
    if live:
        shutil.copyfile(log, rotated(log, 1))
        with open(log, "r+b") as handle:
            handle.truncate(0)
    else:
        os.replace(log, rotated(log, 1))
    return dropped


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
    """The process's command line, or None where it cannot be known: no /proc, or an empty one. The kernel shows
    an empty command line while a process is exiting and, on a busy machine, for a moment after `Popen` returns
    (the exec has closed our pipe but not yet set the new arguments): that is not "another program"."""
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return line or None


def _recorded_pid(settings: Settings, name: str) -> int | None:
    """The pid in the service's pid file, or None without a readable one."""
    try:
        return int(_pid_file(settings, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid in the service's pid file if that process is alive and is that service, else None."""
    pid = _recorded_pid(settings, name)
    if pid is None or not _alive(pid):
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


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) as a directory only its owner may enter: mode 0700 from the start.

    The state dir holds stored objects, the Prefect DB, logs and the S3 identities: on a shared machine
    another user must not read them. A directory left 0755 by an older flowtune is tightened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)  # the mode is given at creation: no moment where it is world-readable
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    return path


def start(settings: Settings, service: Service) -> int:
    """Start `service` in the background in its own process group; return its pid."""
    log = _log_file(settings, service.name)
    private_dir(settings.state_dir)
    log.parent.mkdir(exist_ok=True)
    rotate_log(log, LOG_MAX_BYTES, LOG_KEEP, live=False)  # not running yet: nobody writes to it
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


def how_it_ended(settings: Settings, name: str) -> str:
    """Why `running_pid` finds no service: its exit code or signal, or a pid now running something else."""
    child = _CHILDREN.get(_recorded_pid(settings, name))  # only a process this interpreter started tells how
    if child is None:
        return "its process is gone"
    code = child.poll()
    if code is None:  # alive, but its command line lacks the service's marker
        return f"pid {child.pid} runs `{_command_line(child.pid)}`, not {MARKERS.get(name, name)!r}"
    if code < 0:
        signame = signal.Signals(-code).name
        hint = " (the kernel's out-of-memory killer, or another process)" if -code == signal.SIGKILL else ""
        return f"killed by {signame}{hint}"
    return f"exit code {code}"


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
            raise ServiceError(f"{name} exited during start-up ({last}; {how_it_ended(settings, name)}); "
                               f"{log_tail(settings, name)}")
        if time.monotonic() > deadline:
            where = log_tail(settings, name) if managed else "an external service, not started here"
            raise ServiceError(f"{name} not healthy after {timeout_s:.0f} s ({last}); {where}")
        time.sleep(0.5)


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialize up/down on one state dir: two concurrent `up`s must not both start a server."""
    private_dir(settings.state_dir)
    with open(settings.state_dir / "services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield

