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

from flows.ops.services.processes import ConfigError, private_dir
from tasks.settings import Settings

ENV_FILE = Path(".env")
DVC_REMOTE = "storage"
ACCESS_KEY_ENV = "FLOWTUNE_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "FLOWTUNE_S3_SECRET_ACCESS_KEY"
# The client-side name (Prefect reads it from `.env` itself); the server gets the same value as
# PREFECT_SERVER_API_AUTH_STRING. Only the client name goes into `.env`: a server name there would make
# every Prefect process in the checkout (tests' in-process servers too) demand a login.
AUTH_STRING_ENV = "PREFECT_API_AUTH_STRING"
PREFECT_USER = "admin"


def ensure_credentials(settings: Settings, env_file: Path = ENV_FILE) -> Settings:
    """Return `settings` with S3 keys and, for a local Prefect server, its basic-auth string: its own,
    else those in `env_file`, else new ones.

    New values are appended to `env_file` (created 0600; existing lines and values are never
    changed) and returned in a copy of `settings`, so explicit constructor arguments (ports, state
    dir) survive. An external endpoint gets no invented keys: its owner must provide them (an
    external Prefect API may have no auth: none is invented for it either).
    """
    needed = _needed(settings)
    if all(_known(settings)[name] for name in needed):
        return settings  # given explicitly: no `.env` needed
    known = _known(settings, env_file)
    if any(known[name] is None for name in needed):
        if settings.s3_endpoint_url and None in (known[ACCESS_KEY_ENV], known[SECRET_KEY_ENV]):
            raise ConfigError(f"FLOWTUNE_S3_ENDPOINT_URL={settings.s3_endpoint_url} is set but "
                              f"{ACCESS_KEY_ENV} / {SECRET_KEY_ENV} are not: set both in .env")
        known = _generate_missing(settings, env_file, needed)
    auth = known[AUTH_STRING_ENV]
    return settings.model_copy(update={
        "s3_access_key_id": known[ACCESS_KEY_ENV], "s3_secret_access_key": SecretStr(known[SECRET_KEY_ENV]),
        "prefect_api_auth_string": SecretStr(auth) if auth else None})


def _needed(settings: Settings) -> tuple[str, ...]:
    """The credentials this configuration must have: S3 keys always, an auth string for our own Prefect."""
    return (ACCESS_KEY_ENV, SECRET_KEY_ENV) + ((AUTH_STRING_ENV,) if prefect_is_local(settings) else ())


def _known(settings: Settings, env_file: Path | None = None) -> dict[str, str | None]:
    """Each credential from `settings`, else from `env_file`; None where neither has one."""
    from dotenv import dotenv_values

    stored = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file and env_file.exists() else {}
    secret, auth = settings.s3_secret_access_key, settings.prefect_api_auth_string
    return {ACCESS_KEY_ENV: settings.s3_access_key_id or stored.get(ACCESS_KEY_ENV),
            SECRET_KEY_ENV: secret.get_secret_value() if secret else stored.get(SECRET_KEY_ENV),
            AUTH_STRING_ENV: auth.get_secret_value() if auth else stored.get(AUTH_STRING_ENV)}


def _generate_missing(settings: Settings, env_file: Path, needed: tuple[str, ...]) -> dict[str, str | None]:
    """Generate and append the missing credentials while holding a lock on `env_file`.

    Two first-time `services up` at once would otherwise both find no keys and both append a pair:
    `.env` would hold two, and the SeaweedFS started by one would reject the other's. Under the lock
    the second one re-reads the file and finds the first one's keys.
    """
    with _locked_file(env_file):
        known = _known(settings, env_file)
        new = {name: _new_credential(name) for name in needed if known[name] is None}
        if new:
            _append_private(env_file, "".join(f"{k}={v}\n" for k, v in new.items()))
    return {**known, **new}


def _new_credential(name: str) -> str:
    if name == ACCESS_KEY_ENV:
        return f"flowtune-{secrets.token_hex(4)}"
    if name == AUTH_STRING_ENV:
        return f"{PREFECT_USER}:{secrets.token_hex(24)}"  # Prefect's basic auth takes "user:password"
    return secrets.token_hex(24)


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
        **prefect_auth_env(settings),
    }


def prefect_auth_env(settings: Settings) -> dict[str, str]:
    """PREFECT_API_AUTH_STRING for a client of a Prefect API that has one; nothing otherwise."""
    auth = settings.prefect_api_auth_string
    return {AUTH_STRING_ENV: auth.get_secret_value()} if auth else {}


def prefect_auth_header(settings: Settings) -> dict[str, str]:
    """The `Authorization: Basic ...` header Prefect's own client sends; empty without an auth string."""
    import base64

    auth = settings.prefect_api_auth_string
    return {"Authorization": "Basic " + base64.b64encode(auth.get_secret_value().encode()).decode()} if auth else {}


SEAWEED_SECURITY_FILE = "security.toml"


def seaweed_security(cors_origin: str, keys: dict[str, str]) -> str:
    """SeaweedFS `security.toml`: JWTs required for every HTTP read and write of the volume and filer
    ports, so only the S3 gateway (which signs them, and checks our S3 keys) reaches stored data.

    `keys`: `write`, `read` (master -> volume) and `filer_write`, `filer_read` (S3 gateway -> filer).
    CORS allows only `cors_origin` (the Prefect UI): weed's default `*` lets any web page the developer
    opens call these ports. The filer's directory listings and the volume UI are off.
    """
    return (f'[cors.allowed_origins]\nvalues = "{cors_origin}"\n\n'
            "[access]\nui = false\n\n"
            "[filer.expose_directory_metadata]\nenabled = false\n\n"
            f'[jwt.signing]\nkey = "{keys["write"]}"\nexpires_after_seconds = 10\n\n'
            f'[jwt.signing.read]\nkey = "{keys["read"]}"\nexpires_after_seconds = 10\n\n'
            f'[jwt.filer_signing]\nkey = "{keys["filer_write"]}"\nexpires_after_seconds = 10\n\n'
            f'[jwt.filer_signing.read]\nkey = "{keys["filer_read"]}"\nexpires_after_seconds = 10\n')


def seaweed_grpc_tls(tls: dict[str, Path]) -> str:
    """The `security.toml` part that turns on mutual TLS for every gRPC port (master, volume, filer, S3):
    without a certificate signed by our CA, `weed shell` or any gRPC client is refused. weed's
    processes all present the one certificate, as server and as client."""
    import json  # a JSON string is a valid TOML basic string: paths with quotes or backslashes stay intact

    cert = f'cert = {json.dumps(str(tls["cert"]))}\nkey = {json.dumps(str(tls["key"]))}\n'
    parts = [f'[grpc]\nca = {json.dumps(str(tls["ca"]))}\n']
    parts += [f"[grpc.{role}]\n{cert}" for role in ("master", "volume", "filer", "s3", "client")]
    return "\n".join(parts)


def _grpc_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA and one certificate it signs (server and client use), written 0600 under
    `folder`. The CA's key is not kept: nothing else will ever be signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509  # a dependency of Prefect, so always installed with flowtune
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowtune-seaweedfs-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowtune-seaweedfs")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca": folder / "ca.crt", "cert": folder / "weed.crt", "key": folder / "weed.key"}
    write_private(files["ca"], ca.public_bytes(pem).decode())
    write_private(files["cert"], leaf.public_bytes(pem).decode())
    write_private(files["key"], key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode())
    return files


def ensure_seaweed_security(settings: Settings) -> Path:
    """Write `<state_dir>/security.toml` (0600) with new random keys unless it exists; its path.

    Called under the services lock (`up`), before weed starts: weed reads `./security.toml` from its
    working directory, the state dir. The keys are kept across restarts (one install, one key set);
    weed's processes use them among themselves, nobody else ever needs them.
    """
    path = private_dir(_state(settings)) / SEAWEED_SECURITY_FILE
    if not path.exists():
        keys = {name: secrets.token_hex(32) for name in ("write", "read", "filer_write", "filer_read")}
        tls = _grpc_certificates(private_dir(path.parent / "tls"))
        write_private(path, seaweed_security(_origin(settings.ui_url), keys) + "\n" + seaweed_grpc_tls(tls))
    return path


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
