"""Credentials and configuration of the local services.

S3 keys from the settings / `.env` (generated once into `./.env`, mode 0600, under a lock on that
file, when missing), the SeaweedFS identities file, DVC's `.dvc/config.local` pointing the `storage`
remote at the S3 endpoint, whether S3 and Prefect are ours to start or someone else's, and the
environment a client process needs (`service_env`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from flows.services.processes import ConfigError
from tasks.settings import Settings

ENV_FILE = Path(".env")
DVC_REMOTE = "storage"
ACCESS_KEY_ENV = "FLOWTUNE_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "FLOWTUNE_S3_SECRET_ACCESS_KEY"


def ensure_credentials(settings: Settings, env_file: Path = ENV_FILE) -> Settings:
    """Return `settings` with S3 keys: its own, else those in `env_file`, else new ones.

    New keys are appended to `env_file` (created 0600; existing lines and values are never
    changed) and returned in a copy of `settings`, so explicit constructor arguments (ports, state
    dir) survive. An external endpoint gets no invented keys: its owner must provide them.
    """
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        return settings
    access, secret = _known_keys(settings, env_file)
    if access is None or secret is None:
        if settings.s3_endpoint_url:
            raise ConfigError(f"FLOWTUNE_S3_ENDPOINT_URL={settings.s3_endpoint_url} is set but "
                              f"{ACCESS_KEY_ENV} / {SECRET_KEY_ENV} are not: set both in .env")
        access, secret = _generate_missing_keys(settings, env_file)
    return settings.model_copy(update={"s3_access_key_id": access, "s3_secret_access_key": SecretStr(secret)})


def _known_keys(settings: Settings, env_file: Path) -> tuple[str | None, str | None]:
    """The access key and secret from `settings`, else from `env_file`; None where neither has one."""
    from dotenv import dotenv_values

    stored = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}
    access = settings.s3_access_key_id or stored.get(ACCESS_KEY_ENV)
    secret = (settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key
              else stored.get(SECRET_KEY_ENV))
    return access, secret


def _generate_missing_keys(settings: Settings, env_file: Path) -> tuple[str, str]:
    """Generate and append the missing keys while holding a lock on `env_file`.

    Two first-time `services up` at once would otherwise both find no keys and both append a pair:
    `.env` would hold two, and the SeaweedFS started by one would reject the other's. Under the lock
    the second one re-reads the file and finds the first one's keys.
    """
    with _locked_file(env_file):
        access, secret = _known_keys(settings, env_file)
        new: dict[str, str] = {}
        if access is None:
            access = new[ACCESS_KEY_ENV] = f"flowtune-{secrets.token_hex(4)}"
        if secret is None:
            secret = new[SECRET_KEY_ENV] = secrets.token_hex(24)
        if new:
            _append_private(env_file, "".join(f"{k}={v}\n" for k, v in new.items()))
    return access, secret


@contextlib.contextmanager
def _locked_file(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` itself (created 0600: it is about to hold a secret).

    flock belongs to the open file description, so it also excludes other threads of this process;
    the kernel drops it if the holder dies.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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


def _state(settings: Settings) -> Path:
    # Absolute: the services run in other directories and must agree with later calls from elsewhere.
    return settings.state_dir.resolve()


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

