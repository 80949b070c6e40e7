"""flows.ops.services without starting anything: credentials, config files, command lines, port checks."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.ops import services
from flows.ops.services import definitions
from tasks.settings import Settings

PORTS = {"s3_port": 21001, "seaweed_master_port": 21002, "seaweed_volume_port": 21003,
         "seaweed_filer_port": 21004, "prefect_port": 21005}


@pytest.fixture(autouse=True)
def no_user_service_env(monkeypatch):
    """The user's FLOWTUNE_* / PREFECT_API_URL must not leak into these tests."""
    for key in list(os.environ):
        if key.startswith("FLOWTUNE_") or key in {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}:
            monkeypatch.delenv(key)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    fields = {"state_dir": tmp_path / ".flowtune", "s3_endpoint_url": None, "prefect_api_url": None,
              "s3_access_key_id": None, "s3_secret_access_key": None, "prefect_api_auth_string": None,
              **PORTS, **overrides}
    return Settings(_env_file=None, **fields)


def with_keys(tmp_path: Path, **overrides) -> Settings:
    return make_settings(tmp_path, s3_access_key_id="AKID", s3_secret_access_key=SecretStr("s3cr3t"),
                         prefect_api_auth_string=SecretStr("admin:p4ss"), **overrides)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- credentials


def test_credentials_are_generated_once_into_a_private_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = services.ensure_credentials(make_settings(tmp_path))
    env = Path(".env")
    assert mode(env) == 0o600
    text = env.read_text()
    assert f"FLOWTUNE_S3_ACCESS_KEY_ID={first.s3_access_key_id}\n" in text
    assert f"FLOWTUNE_S3_SECRET_ACCESS_KEY={first.secret_key()}\n" in text
    assert len(first.secret_key()) >= 32
    second = services.ensure_credentials(make_settings(tmp_path))
    assert (second.s3_access_key_id, second.secret_key()) == (first.s3_access_key_id, first.secret_key())
    assert env.read_text() == text  # nothing appended the second time
    # What the rest of the code base reads: a plain Settings() from the same folder.
    assert Settings().secret_key() == first.secret_key()


def test_existing_env_lines_and_values_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text("OTHER=1\nFLOWTUNE_S3_ACCESS_KEY_ID=mine")  # no final newline
    os.chmod(".env", 0o644)
    settings = services.ensure_credentials(make_settings(tmp_path, s3_port=9999))
    assert settings.s3_access_key_id == "mine"
    assert settings.s3_port == 9999  # explicit arguments survive the reload
    lines = Path(".env").read_text().splitlines()
    assert lines[:2] == ["OTHER=1", "FLOWTUNE_S3_ACCESS_KEY_ID=mine"]
    assert lines[2] == f"FLOWTUNE_S3_SECRET_ACCESS_KEY={settings.secret_key()}"
    assert lines[3] == f"PREFECT_API_AUTH_STRING={settings.prefect_api_auth_string.get_secret_value()}"
    assert len(lines) == 4
    assert mode(Path(".env")) == 0o600  # it holds a secret now


def test_two_concurrent_first_starts_generate_one_key_pair(tmp_path, monkeypatch):
    """Two `services up` at once on a fresh folder: one key pair in .env, and both use it."""
    from flows.ops.services import config

    real_token_hex = config.secrets.token_hex

    def slow_token_hex(nbytes: int) -> str:
        time.sleep(0.3)  # widen the read-then-append window: without the lock both threads are in it
        return real_token_hex(nbytes)

    monkeypatch.setattr(config.secrets, "token_hex", slow_token_hex)
    env_file = tmp_path / ".env"
    start = threading.Barrier(2)

    def first_start() -> Settings:
        start.wait()
        return services.ensure_credentials(make_settings(tmp_path), env_file)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [future.result() for future in [pool.submit(first_start) for _ in range(2)]]
    lines = env_file.read_text().splitlines()
    assert sum(line.startswith("FLOWTUNE_S3_ACCESS_KEY_ID=") for line in lines) == 1, lines
    assert sum(line.startswith("FLOWTUNE_S3_SECRET_ACCESS_KEY=") for line in lines) == 1, lines
    assert sum(line.startswith("PREFECT_API_AUTH_STRING=") for line in lines) == 1, lines
    keys = {(result.s3_access_key_id, result.secret_key()) for result in results}
    assert len(keys) == 1 and f"FLOWTUNE_S3_SECRET_ACCESS_KEY={results[0].secret_key()}" in lines
    assert mode(env_file) == 0o600


def test_a_local_prefect_gets_a_generated_auth_string_an_external_one_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = services.ensure_credentials(make_settings(tmp_path))
    user, _, password = local.prefect_api_auth_string.get_secret_value().partition(":")
    assert user == services.PREFECT_USER and len(password) >= 32
    assert Settings().prefect_api_auth_string == local.prefect_api_auth_string  # read back from .env
    env = services.service_env(local)
    assert env["PREFECT_API_AUTH_STRING"] == local.prefect_api_auth_string.get_secret_value()
    server = services.prefect_server(local)
    assert server.env["PREFECT_SERVER_API_AUTH_STRING"] == local.prefect_api_auth_string.get_secret_value()
    assert services.prefect_worker(local).env["PREFECT_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"]
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    external = services.ensure_credentials(make_settings(tmp_path, prefect_api_url="https://prefect.example.com/api"))
    assert external.prefect_api_auth_string is None and "PREFECT_API_AUTH_STRING" not in Path(".env").read_text()
    assert "PREFECT_API_AUTH_STRING" not in services.service_env(external)


def test_the_login_hint_names_the_file_not_the_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    settings = services.ensure_credentials(make_settings(tmp_path))
    hint = services.ui_login_hint()
    assert str(tmp_path / ".env") in hint and "PREFECT_API_AUTH_STRING" in hint
    assert settings.prefect_api_auth_string.get_secret_value().partition(":")[2] not in hint


def test_services_up_prints_how_to_log_in_never_the_password(tmp_path, monkeypatch, capsys):
    """`flowtune services up` output (services started: stubbed) names the user and the file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWTUNE_STATE_DIR", str(tmp_path / ".flowtune"))
    monkeypatch.setattr(services, "up", lambda settings: {
        "buckets": services.buckets(settings), "prefect_ui_url": settings.ui_url, "gpu_slots": 1, "dvc_config": None})
    monkeypatch.setattr(services, "status", lambda settings: {})
    assert services.services_main(["up"]) == 0
    printed = capsys.readouterr().out
    password = Settings().prefect_api_auth_string.get_secret_value().partition(":")[2]
    assert "Prefect UI login" in printed and "'admin'" in printed and str(tmp_path / ".env") in printed
    assert password not in printed


def test_given_credentials_need_no_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = with_keys(tmp_path)
    assert services.ensure_credentials(settings) is settings
    assert not Path(".env").exists()


def test_external_s3_without_keys_is_an_error_not_invented_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(services.ConfigError, match="FLOWTUNE_S3_ACCESS_KEY_ID"):
        services.ensure_credentials(make_settings(tmp_path, s3_endpoint_url="https://s3.example.com"))
    assert not Path(".env").exists()


@pytest.fixture
def permissive_umask():
    """umask 0: a file or directory created without an explicit mode would be world-readable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def no_chmod(monkeypatch):
    """Secret files must get their mode when created (os.open / mkdir), not from a chmod afterwards:
    in between, another user could open them. With chmod disabled only a creation mode can pass."""
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: None)
    monkeypatch.setattr(os, "chmod", lambda path, mode, **kwargs: None)


def test_secret_files_are_created_0600_not_chmodded_afterwards(tmp_path, monkeypatch, permissive_umask, no_chmod):
    monkeypatch.chdir(tmp_path)
    settings = services.ensure_credentials(make_settings(tmp_path))
    assert mode(Path(".env")) == 0o600
    services.write_private(tmp_path / ".flowtune" / "s3.json", json.dumps(services.s3_identities(settings)))
    assert mode(tmp_path / ".flowtune" / "s3.json") == 0o600
    (tmp_path / ".dvc").mkdir()
    assert mode(services.wire_dvc_remote(settings, tmp_path)) == 0o600


def test_the_state_dir_is_created_0700(tmp_path, permissive_umask, no_chmod):
    settings = make_settings(tmp_path)
    with services._locked(settings):
        assert mode(settings.state_dir) == 0o700
    assert mode(services.private_dir(tmp_path / "deeper" / "state")) == 0o700


def test_an_older_world_readable_state_dir_is_tightened(tmp_path):
    state = tmp_path / ".flowtune"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    services.private_dir(state)
    assert mode(state) == 0o700


# ---------------------------------------------------------------- config files


def test_s3_identities_hold_our_key_and_let_anonymous_only_read_reports(tmp_path):
    settings = with_keys(tmp_path)
    ours, anonymous = services.s3_identities(settings)["identities"]
    assert ours["credentials"] == [{"accessKey": "AKID", "secretKey": "s3cr3t"}]
    assert set(ours["actions"]) == {"Admin", "Read", "Write", "List", "Tagging"}
    # unsigned requests may GET Data Docs pages, nothing else (no list, no write, no data, no models)
    assert anonymous == {"name": "anonymous", "actions": [f"Read:{settings.reports_bucket}"]}
    assert "credentials" not in anonymous


def test_seaweed_security_is_private_random_per_install_and_kept(tmp_path, permissive_umask, no_chmod):
    import tomllib

    first, second = make_settings(tmp_path / "a"), make_settings(tmp_path / "b")
    path = services.ensure_seaweed_security(first)
    assert mode(path) == 0o600 and path.name == "security.toml"
    config = tomllib.loads(path.read_text())
    keys = [config["jwt"]["signing"]["key"], config["jwt"]["signing"]["read"]["key"],
            config["jwt"]["filer_signing"]["key"], config["jwt"]["filer_signing"]["read"]["key"]]
    assert len(set(keys)) == 4 and all(len(key) == 64 for key in keys)
    assert config["cors"]["allowed_origins"]["values"] == first.ui_url  # not weed's default "*"
    assert config["filer"]["expose_directory_metadata"]["enabled"] is False
    # gRPC: mutual TLS on every port weed serves, with a CA of this install; key and certificates 0600
    assert {role: config["grpc"][role]["cert"] for role in ("master", "volume", "filer", "s3", "client")} == \
        dict.fromkeys(("master", "volume", "filer", "s3", "client"), str(path.parent / "tls" / "weed.crt"))
    for name in ("ca.crt", "weed.crt", "weed.key"):
        assert mode(path.parent / "tls" / name) == 0o600
    assert mode(path.parent / "tls") == 0o700
    assert config["grpc"]["ca"] == str(path.parent / "tls" / "ca.crt")
    text = path.read_text()
    assert services.ensure_seaweed_security(first).read_text() == text  # a restart keeps the keys
    assert keys[0] not in services.ensure_seaweed_security(second).read_text()  # another install: new keys


def test_weed_runs_where_its_security_toml_is_and_restricts_cors(tmp_path):
    settings = make_settings(tmp_path)
    service = services.seaweedfs(settings)
    assert service.cwd == settings.state_dir.resolve()  # weed reads ./security.toml
    assert f"-filer.allowedOrigins={settings.ui_url}" in service.command
    assert f"-s3.allowedOrigins={settings.ui_url}" in service.command
    assert "-ip.bind=127.0.0.1" in service.command


def test_write_private_is_0600_even_over_an_existing_file(tmp_path):
    path = tmp_path / "sub" / "s3.json"
    path.parent.mkdir()
    path.write_text("old")
    os.chmod(path, 0o644)
    services.write_private(path, json.dumps({"a": 1}))
    assert json.loads(path.read_text()) == {"a": 1}
    assert mode(path) == 0o600


def test_dvc_config_local_points_storage_at_the_endpoint(tmp_path):
    text = services.dvc_local_config(with_keys(tmp_path))
    assert "['remote \"storage\"']" in text
    for line in ("url = s3://flowtune-dvc/dvcstore", "endpointurl = http://127.0.0.1:21001",
                 "access_key_id = AKID", "secret_access_key = s3cr3t", "region = us-east-1"):
        assert line in text


def test_dvc_config_local_keeps_the_users_other_settings(tmp_path):
    existing = "[cache]\n    dir = /big/cache\n['remote \"storage\"']\n    url = s3://old/x\n    profile = p\n"
    text = services.dvc_local_config(with_keys(tmp_path, dvc_bucket="b2"), existing)
    assert "dir = /big/cache" in text and "profile = p" in text
    assert "url = s3://b2/dvcstore" in text and "s3://old/x" not in text


def test_wire_dvc_remote_writes_a_private_file_only_in_a_dvc_repo(tmp_path):
    settings = with_keys(tmp_path)
    assert services.wire_dvc_remote(settings, tmp_path) is None
    assert not (tmp_path / ".dvc").exists()
    (tmp_path / ".dvc").mkdir()
    path = services.wire_dvc_remote(settings, tmp_path)
    assert path == tmp_path / ".dvc" / "config.local"
    assert mode(path) == 0o600 and "endpointurl = http://127.0.0.1:21001" in path.read_text()


# ---------------------------------------------------------------- command lines


def test_seaweedfs_sets_or_disables_every_listener(tmp_path):
    service = services.seaweedfs(with_keys(tmp_path))
    state = (tmp_path / ".flowtune").resolve()
    assert Path(service.command[0]).name == "weed" and service.command[1] == "server"
    for flag in (f"-dir={state / 'seaweedfs'}", f"-s3.config={state / 's3.json'}", "-s3",
                 "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 "-s3.port=21001", "-master.port=21002", "-volume.port=21003", "-filer.port=21004",
                 "-s3.port.grpc=31001", "-master.port.grpc=31002", "-volume.port.grpc=31003",
                 "-filer.port.grpc=31004", "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0"):
        assert flag in service.command
    assert sorted(service.ports) == [21001, 21002, 21003, 21004, 31001, 31002, 31003, 31004]
    assert "s3cr3t" not in " ".join(service.command)  # the secret goes through s3.json only


def test_seaweedfs_rejects_ports_that_cannot_work(tmp_path):
    with pytest.raises(services.ServiceError, match="must differ"):
        services.seaweedfs(with_keys(tmp_path, seaweed_filer_port=21001))
    with pytest.raises(services.ServiceError, match="too high"):
        services.seaweedfs(with_keys(tmp_path, seaweed_filer_port=60000))


def test_prefect_server_command_and_environment(tmp_path):
    service = services.prefect_server(with_keys(tmp_path, prefect_host="127.0.0.2"))
    assert service.command[1:] == ["-m", "prefect", "server", "start", "--host", "127.0.0.2", "--port", "21005"]
    assert service.env["PREFECT_HOME"] == str((tmp_path / ".flowtune" / "prefect").resolve())
    assert service.env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_API_URL" in service.unset_env
    assert service.ports == {21005: "API/UI"} and service.host == "127.0.0.2"


def test_service_env_for_clients(tmp_path):
    env = services.service_env(with_keys(tmp_path))
    assert env == {"PREFECT_API_URL": "http://127.0.0.1:21005/api",
                   "PREFECT_HOME": str((tmp_path / ".flowtune" / "prefect").resolve()),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_AUTH_STRING": "admin:p4ss"}


def test_flowtune_prefect_is_prefects_cli_pointed_at_this_checkouts_server_and_logged_in(tmp_path):
    """The schedules tutorial's `flowtune prefect deployment run ...`: whatever port `.env` gives the server,
    Prefect's own command line talks to it with the auth string (shown masked), with no PREFECT_API_URL to set
    by hand."""
    (tmp_path / ".env").write_text("FLOWTUNE_PREFECT_PORT=21099\nPREFECT_API_AUTH_STRING=admin:p4ss-w0rd-l0ng\n")
    shown = subprocess.run([str(Path(sys.executable).parent / "flowtune"), "prefect", "config", "view"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("FLOWTUNE_", "PREFECT_"))})
    assert shown.returncode == 0, shown.stderr
    assert "PREFECT_API_URL='http://127.0.0.1:21099/api' (from env)" in shown.stdout
    assert "PREFECT_API_AUTH_STRING='********' (from env)" in shown.stdout and "p4ss-w0rd" not in shown.stdout


@pytest.mark.parametrize(("url", "local"), [
    (None, True), ("http://127.0.0.1:21005/api", True), ("http://localhost:21005/api/", True),
    ("http://127.0.0.1:4200/api", False), ("https://prefect.example.com/api", False),
])
def test_only_a_local_prefect_api_url_starts_the_server(tmp_path, url, local):
    assert services.prefect_is_local(with_keys(tmp_path, prefect_api_url=url)) is local


# ---------------------------------------------------------------- processes and ports (none started)


def test_a_taken_port_is_named_with_its_service(tmp_path, monkeypatch, free_port):
    monkeypatch.chdir(tmp_path)
    port = free_port()  # the conftest fixture: its gRPC twin is a valid, free port too
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        settings = make_settings(tmp_path, s3_port=port)
        with pytest.raises(services.ServiceError, match=rf"seaweedfs: port {port} \(S3\)"):
            services.up(settings)
    assert not list((tmp_path / ".flowtune").glob("*.pid"))  # checked before anything started


def test_pid_files_of_dead_or_foreign_processes_are_not_believed(tmp_path):
    settings = with_keys(tmp_path)
    settings.state_dir.mkdir()
    assert services.running_pid(settings, "seaweedfs") is None
    (settings.state_dir / "seaweedfs.pid").write_text("999999999\n")
    assert services.running_pid(settings, "seaweedfs") is None
    (settings.state_dir / "seaweedfs.pid").write_text(f"{os.getpid()}\n")  # alive, but not weed
    assert services.running_pid(settings, "seaweedfs") is None


def test_log_tail_shows_only_the_latest_start(tmp_path):
    settings = with_keys(tmp_path)
    log = settings.state_dir / "logs" / "weed.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"{services.LOG_MARKER} weed 1 -----\nold crash\n{services.LOG_MARKER} weed 2 -----\n"
                   + "".join(f"line {i}\n" for i in range(30)))
    tail = services.log_tail(settings, "weed")
    assert str(log) in tail and "line 29" in tail and "line 10" in tail
    assert "line 9\n" not in tail and "old crash" not in tail


def test_status_lines_and_exit_code(tmp_path, monkeypatch, capsys):
    report = {"seaweedfs": {"pid": 12, "url": "http://127.0.0.1:1", "healthy": True},
              "prefect-server": {"pid": None, "url": "http://127.0.0.1:2", "healthy": False}}
    monkeypatch.setattr(services, "status", lambda settings: report)
    assert services.services_main(["status"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["seaweedfs", "pid=12", "healthy=yes", "http://127.0.0.1:1"]
    assert lines[1].split() == ["prefect-server", "pid=-", "healthy=no", "http://127.0.0.1:2"]


def test_up_prints_no_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, port in PORTS.items():
        monkeypatch.setenv(f"FLOWTUNE_{key.upper()}", str(port))
    monkeypatch.setenv("FLOWTUNE_STATE_DIR", str(tmp_path / ".flowtune"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(services, "up", lambda settings: {
        "buckets": ["a", "b"], "prefect_ui_url": "http://ui", "dvc_config": None, "gpu_slots": 1})
    monkeypatch.setattr(services, "status", lambda settings: {})
    assert services.services_main(["up"]) == 0
    secret = Settings().secret_key()  # generated into ./.env by services_main
    assert secret not in capsys.readouterr().out


def test_down_without_state_dir_does_nothing(tmp_path):
    services.down(with_keys(tmp_path))
    assert not (tmp_path / ".flowtune").exists()


def test_the_worker_serves_our_pool_from_this_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = with_keys(tmp_path)
    worker = services.prefect_worker(settings)
    assert worker.command[-6:-2] == ["--pool", services.WORK_POOL, "--type", "process"]
    assert worker.cwd == tmp_path.resolve() and worker.env["PREFECT_API_URL"] == settings.api_url
    other = with_keys(tmp_path / "other")
    assert services.worker_name(other) != services.worker_name(settings)  # two checkouts, two workers


def test_the_ui_is_told_where_the_api_is(tmp_path):
    settings = with_keys(tmp_path).model_copy(update={"prefect_port": 4711})
    env = services.prefect_server(settings).env
    assert (env["PREFECT_SERVER_API_PORT"], env["PREFECT_UI_URL"]) == ("4711", "http://127.0.0.1:4711")


@pytest.mark.parametrize(("listing", "slots"), [("", 1), ("GPU 0: H100 (UUID: a)\nGPU 1: H100 (UUID: b)\n", 2)])
def test_one_accelerator_slot_per_gpu_and_one_without(monkeypatch, listing: str, slots: int):
    # accelerator_slots looks `subprocess` up in flows/ops/services/definitions.py
    monkeypatch.setattr(definitions.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listing, ""))
    assert services.accelerator_slots() == slots


def test_a_new_prefect_server_gets_the_migrated_database_once(tmp_path, monkeypatch):
    """A new server's home gets a copy of the migrated template (Prefect then skips ~16 s of migrations);
    an existing database is never replaced, and a configured database URL means no copy at all."""
    template = tmp_path / "template.db"
    template.write_bytes(b"migrated schema")
    monkeypatch.setattr(definitions, "migrated_template", lambda: template)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)

    home = tmp_path / "state" / "prefect"
    definitions.seed_prefect_database(home)
    assert (home / "prefect.db").read_bytes() == b"migrated schema" and sorted(home.iterdir()) == [home / "prefect.db"]

    (home / "prefect.db").write_bytes(b"runs of last week")
    definitions.seed_prefect_database(home)
    assert (home / "prefect.db").read_bytes() == b"runs of last week"

    elsewhere = tmp_path / "postgres-backed"
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://u:p@db:5432/prefect")
    definitions.seed_prefect_database(elsewhere)
    assert not elsewhere.exists()


def test_the_migrated_template_is_made_once_per_prefect_version(tmp_path, monkeypatch):
    """Made by `prefect server database upgrade` in a private home, then reused; a failed migration
    leaves no template, so the server migrates its own database as before."""
    import prefect

    calls = []

    def fake_run(command, env, **_):
        calls.append(command)
        if ok:
            (Path(env["PREFECT_HOME"]) / "prefect.db").write_bytes(b"schema")
        return subprocess.CompletedProcess(command, 0 if ok else 1, "", "")

    monkeypatch.setattr(definitions.sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(definitions.subprocess, "run", fake_run)
    ok = False
    assert definitions.migrated_template() is None
    ok = True
    made = definitions.migrated_template()
    assert made == tmp_path / "venv" / "share" / "flowtune" / f"prefect-{prefect.__version__}.db"
    assert made.read_bytes() == b"schema" and definitions.migrated_template() == made
    assert len(calls) == 2 and calls[-1][-4:] == ["server", "database", "upgrade", "-y"]
    assert [p.name for p in made.parent.iterdir() if p.name.startswith(".prefect-home-")] == []
