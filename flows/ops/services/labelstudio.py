"""Label Studio as an optional local service (`flowtune services up --with label-studio`).

Label Studio cannot join our lock (it pins python-json-logger, pytz and redis below what Prefect needs), so it
lives in a venv of its own, `~/.cache/flowtune/label-studio-<version>/`, installed on first use only and shared
by the user's checkouts (a cache keyed by the version: about 1 GB, minutes to install). We talk to it over plain HTTP
(flows/labelling/studio.py), never through its SDK, which would pull opencv into our lock (DECISIONS 70).

It starts headless, offline and bound to 127.0.0.1 (`--internal-host`; `--host` is only the URL it prints),
with an admin user and a 40-hex legacy API token generated once into `.env` (0600), its data under
`<state_dir>/label-studio/`. A busy port makes Label Studio silently take the next one, so the port is checked
before the start and the health check asks *our* user back with *our* token at the configured port: a
different server there fails the check instead of being mistaken for ours.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from flows.ops.services.config import _append_private, _locked_file, _state
from flows.ops.services.processes import ConfigError, Service, ServiceError
from tasks.settings import Settings

NAME = "label-studio"
VERSION = "1.23.2"
USER = "admin@flowtune.local"
TOKEN_ENV = "FLOWTUNE_LABEL_STUDIO_TOKEN"
PASSWORD_ENV = "FLOWTUNE_LABEL_STUDIO_PASSWORD"
INSTALLED_MARKER = ".flowtune-installed"  # written last: a venv without it is a broken install, redone
INSTALL_TIMEOUT_S = 1800
FIRST_START_TIMEOUT_S = 480.0  # the first start runs its migrations: about 40 s on a free core, 172 s on 2 busy ones


def venv_dir(settings: Settings) -> Path:
    """FLOWTUNE_LABEL_STUDIO_VENV, else `${XDG_CACHE_HOME:-~/.cache}/flowtune/label-studio-<version>`: one install
    per user and version, shared by every checkout and clean clone (CI clones afresh; a 1 GB venv per clone, and
    minutes to build it, is what a cache is for)."""
    if settings.label_studio_venv:
        return settings.label_studio_venv
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "flowtune" / f"label-studio-{VERSION}"


def is_installed(settings: Settings) -> bool:
    return (venv_dir(settings) / INSTALLED_MARKER).is_file()


def is_local(settings: Settings) -> bool:
    """An instance we start, unless FLOWTUNE_LABEL_STUDIO_URL names one run by someone else."""
    return settings.label_studio_url is None


def install(settings: Settings, out=sys.stderr) -> Path:
    """Create the venv and pip-install Label Studio into it, once; the venv's folder."""
    venv = venv_dir(settings)
    if is_installed(settings):
        return venv
    if venv.exists():  # an interrupted install: start over rather than trust half a venv
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing Label Studio {VERSION} into {venv} (once; a few minutes, about 1 GB)", file=out, flush=True)
    for command in ([sys.executable, "-m", "venv", str(venv)],
                    [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     f"label-studio=={VERSION}"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if result.returncode:
            raise ServiceError(f"installing Label Studio failed: `{' '.join(command)}`: "
                               f"{(result.stderr or result.stdout).strip()[-800:]}")
    (venv / INSTALLED_MARKER).write_text(f"label-studio=={VERSION}\n")
    return venv


def ensure_credentials(settings: Settings, env_file: Path = Path(".env"), generate: bool = True) -> Settings:
    """`settings` with the admin password and API token: its own, else `.env`'s, else (`generate`, for a local
    instance) new ones appended to `.env` (0600, under a lock: two first `up`s must not make two tokens)."""
    if settings.label_studio_token and settings.label_studio_password:
        return settings
    from dotenv import dotenv_values

    def stored() -> dict[str, str]:
        return {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}

    values = stored()
    if generate and is_local(settings) and not (values.get(TOKEN_ENV) and values.get(PASSWORD_ENV)):
        with _locked_file(env_file):
            values = stored()
            new = {name: value for name, value in ((TOKEN_ENV, secrets.token_hex(20)),
                                                   (PASSWORD_ENV, secrets.token_urlsafe(18))) if not values.get(name)}
            if new:
                _append_private(env_file, "".join(f"{k}={v}\n" for k, v in new.items()))
            values |= new
    token, password = values.get(TOKEN_ENV), values.get(PASSWORD_ENV)
    return settings.model_copy(update={
        "label_studio_token": settings.label_studio_token or (SecretStr(token) if token else None),
        "label_studio_password": settings.label_studio_password or (SecretStr(password) if password else None)})


def service(settings: Settings) -> Service:
    """`label-studio start`, headless and offline, on 127.0.0.1 only."""
    data = _state(settings) / "label-studio"
    data.mkdir(parents=True, exist_ok=True)
    port = settings.label_studio_port
    command = [str(venv_dir(settings) / "bin" / "python"), "-m", "label_studio.server", "start", "--no-browser",
               "--port", str(port), "--internal-host", "127.0.0.1", "--host", f"http://127.0.0.1:{port}",
               "--data-dir", str(data)]
    env = {"LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": settings.label_studio_password.get_secret_value(),
           "LABEL_STUDIO_USER_TOKEN": settings.label_studio_token.get_secret_value(),
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
           # Only at the first start: `Authorization: Token ...` (what we send) gets 401 without it.
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_BASE_DATA_DIR": str(data),
           # Offline: no PyPI version check at start, no analytics, no Sentry.
           "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    return Service(NAME, command, {port: "Label Studio"}, env=env, cwd=data)


def check(settings: Settings) -> None:
    """Our user answers at the configured URL with our token (not merely *a* server on that port)."""
    import requests

    url = f"{settings.labelling_url}/api/current-user/whoami"
    token = settings.label_studio_token.get_secret_value() if settings.label_studio_token else ""
    response = requests.get(url, headers={"Authorization": f"Token {token}"}, timeout=5)
    if response.status_code in (401, 403):
        raise ConfigError(f"Label Studio at {settings.labelling_url} refused our token (HTTP {response.status_code}): "
                          f"check {TOKEN_ENV} in .env (another instance on that port?)")
    if response.status_code != 200:
        raise ServiceError(f"HTTP {response.status_code} from {url}")
    if is_local(settings) and response.json().get("email") != USER:
        raise ConfigError(f"the server at {settings.labelling_url} is not our Label Studio (user "
                          f"{response.json().get('email')!r}): another one holds port {settings.label_studio_port}")


def check_starting(settings: Settings) -> None:
    """`check` while our instance starts: it may answer 401 before its first-start set-up has created our user and
    token (seen on a busy machine), so a refusal then means "not yet", not "wrong token"."""
    try:
        check(settings)
    except ConfigError as exc:
        raise ServiceError(str(exc)) from None
