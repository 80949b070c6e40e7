"""`flowtune services install`: user-level systemd units that start the local services at boot.

The units run the very commands `flowtune services up` runs (flows/ops/services/definitions.py), in the same
folders, logging to the same `<state_dir>/logs/<name>.log`, with `Restart=on-failure`. Secrets never go
into a unit file (those are world-readable): each unit reads `./.env` and a private environment file of
its own, `<state_dir>/systemd/<name>.env` (0600), with the variables `up` would set. The worker starts
after the Prefect server and SeaweedFS and stops with them (`After=`, `Requires=`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from flows.ops.services.config import ENV_FILE, _state, prefect_is_local, s3_is_local, write_private
from flows.ops.services.definitions import prefect_server, prefect_worker, seaweedfs
from flows.ops.services.processes import STOP_GRACE_BY_SERVICE, STOP_GRACE_S, Service, _log_file, private_dir
from tasks.settings import Settings

USER_UNITS = Path("~/.config/systemd/user")


@dataclass(frozen=True)
class Unit:
    name: str  # the file name: flowtune-<checkout digest>-<service>.service
    text: str
    env_file: Path  # the service's private environment (0600)
    env: dict[str, str]


def unit_name(settings: Settings, service: str) -> str:
    """Unique per state dir, as the worker's name: two checkouts' units do not overwrite each other."""
    digest = hashlib.sha256(str(_state(settings)).encode()).hexdigest()[:6]
    return f"flowtune-{digest}-{service}.service"


def quote(arg: str) -> str:
    """One ExecStart argument in systemd's syntax: `%` and `$` escaped, quoted when it holds blanks or quotes."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c in arg for c in ' \t"\'\\;'):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def env_line(key: str, value: str) -> str:
    """A line of an EnvironmentFile (systemd reads double-quoted values with backslash escapes)."""
    return f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"\n'


def local_services(settings: Settings) -> list[Service]:
    """What `up` would start here: SeaweedFS and the Prefect server unless external, the worker unless off."""
    return ([seaweedfs(settings)] if s3_is_local(settings) else []) + \
           ([prefect_server(settings)] if prefect_is_local(settings) else []) + \
           ([prefect_worker(settings)] if settings.start_worker else [])


def render(settings: Settings, service: Service, needs: list[str], checkout: Path) -> Unit:
    """The unit of one service; `needs`: the units it starts after and stops with."""
    env_file = _state(settings) / "systemd" / f"{service.name}.env"
    grace = STOP_GRACE_BY_SERVICE.get(service.name, STOP_GRACE_S)
    requires = " ".join(needs)
    lines = [
        "[Unit]",
        f"Description=flowtune {service.name} ({checkout})",
        f"After=network.target {requires}".rstrip(),
        *([f"Requires={requires}"] if needs else []),
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={service.cwd or checkout}",
        f"EnvironmentFile=-{checkout / ENV_FILE}",  # the keys `up` generated; optional, as for `up`
        f"EnvironmentFile={env_file}",  # after .env: what `up` sets wins, as in `up`
        *([f"UnsetEnvironment={' '.join(service.unset_env)}"] if service.unset_env else []),
        "ExecStart=" + " ".join(quote(arg) for arg in service.command),
        "Restart=on-failure",
        "RestartSec=5",
        f"TimeoutStopSec={grace + 5:.0f}",
        f"StandardOutput=append:{_log_file(settings, service.name).resolve()}",
        "StandardError=inherit",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return Unit(unit_name(settings, service.name), "\n".join(lines), env_file, service.env)


def units(settings: Settings, checkout: Path | None = None) -> list[Unit]:
    """Every local service's unit; the worker needs the others (a flow run needs S3 and the API)."""
    checkout = (checkout or Path.cwd()).resolve()
    services = local_services(settings)
    rendered = []
    for service in services:
        needs = [unit_name(settings, s.name) for s in services if s.name != "prefect-worker"] \
            if service.name == "prefect-worker" else []
        rendered.append(render(settings, service, needs, checkout))
    return rendered


def install(settings: Settings, dest: Path | None = None, checkout: Path | None = None) -> list[Path]:
    """Write the units into `dest` (default ~/.config/systemd/user) and their private environment files;
    the unit files' paths."""
    dest = (dest or USER_UNITS).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    private_dir(private_dir(_state(settings)) / "systemd")  # the environment files hold secrets
    (_state(settings) / "logs").mkdir(exist_ok=True)
    written = []
    for unit in units(settings, checkout):
        write_private(unit.env_file, "".join(env_line(k, v) for k, v in unit.env.items()))
        path = dest / unit.name
        path.write_text(unit.text)
        os.chmod(path, 0o644)  # systemd reads it; it holds no secret
        written.append(path)
    return written
