"""Label Studio as a service, without starting it: credentials, the command line, `up --with`, status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.ops import services
from flows.ops.services import labelstudio
from tasks.settings import Settings


def settings_in(tmp_path: Path, **overrides) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path / ".flowtune", **overrides)


def test_credentials_are_generated_once_into_a_private_env(tmp_path: Path):
    env = tmp_path / ".env"
    first = labelstudio.ensure_credentials(settings_in(tmp_path), env)
    token = first.label_studio_token.get_secret_value()
    assert re.fullmatch(r"[0-9a-f]{40}", token) and first.label_studio_password
    assert env.stat().st_mode & 0o777 == 0o600
    again = labelstudio.ensure_credentials(settings_in(tmp_path), env)
    assert again.label_studio_token.get_secret_value() == token
    assert env.read_text().count(labelstudio.TOKEN_ENV) == 1


def test_status_reads_but_never_writes_credentials(tmp_path: Path):
    env = tmp_path / ".env"
    assert labelstudio.ensure_credentials(settings_in(tmp_path), env, generate=False).label_studio_token is None
    assert not env.exists()


def test_an_external_instance_gets_no_invented_token(tmp_path: Path):
    external = settings_in(tmp_path, label_studio_url="http://studio.example:8080/")
    assert labelstudio.ensure_credentials(external, tmp_path / ".env").label_studio_token is None
    assert external.labelling_url == "http://studio.example:8080" and not labelstudio.is_local(external)


def test_the_service_binds_loopback_offline_with_legacy_tokens(tmp_path: Path):
    settings = labelstudio.ensure_credentials(settings_in(tmp_path, label_studio_port=8123), tmp_path / ".env")
    service = labelstudio.service(settings)
    command = " ".join(service.command)
    assert "--internal-host 127.0.0.1" in command and "--port 8123" in command and "--no-browser" in command
    assert service.ports == {8123: "Label Studio"}
    assert service.env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert service.env["LATEST_VERSION_CHECK"] == "false" and service.env["COLLECT_ANALYTICS"] == "false"
    assert service.env["LABEL_STUDIO_USER_TOKEN"] == settings.label_studio_token.get_secret_value()
    assert str(tmp_path / ".flowtune" / "label-studio") in command


def test_the_venv_is_a_user_cache_keyed_by_the_version(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = settings_in(tmp_path)
    assert labelstudio.venv_dir(settings) == tmp_path / "cache" / "flowtune" / f"label-studio-{labelstudio.VERSION}"
    assert not labelstudio.is_installed(settings)
    (labelstudio.venv_dir(settings)).mkdir(parents=True)
    assert not labelstudio.is_installed(settings)  # a folder without the marker: an interrupted install
    (labelstudio.venv_dir(settings) / labelstudio.INSTALLED_MARKER).write_text("x")
    assert labelstudio.is_installed(settings)


def test_up_takes_with_label_studio():
    args = services.build_services_parser().parse_args(["up", "--with", "label-studio"])
    assert args.with_ == ["label-studio"]
    with pytest.raises(SystemExit):
        services.build_services_parser().parse_args(["up", "--with", "nope"])


def test_status_leaves_out_a_label_studio_never_installed(tmp_path: Path):
    assert services.label_studio_status(settings_in(tmp_path)) == {}


def test_status_leaves_out_a_stopped_label_studio_and_reports_a_dead_one(tmp_path: Path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on, so the health check fails at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = labelstudio.ensure_credentials(settings_in(tmp_path, label_studio_port=port), tmp_path / ".env")
    (settings.state_dir / labelstudio.NAME).mkdir(parents=True)  # used once, then stopped: no pid file
    assert services.label_studio_status(settings) == {}

    (settings.state_dir / f"{labelstudio.NAME}.pid").write_text("999999999\n")  # started, then died
    row = services.label_studio_status(settings)[labelstudio.NAME]
    assert row["pid"] is None and row["healthy"] is False


def test_a_busy_port_is_refused_before_the_start(tmp_path: Path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = labelstudio.ensure_credentials(settings_in(tmp_path, label_studio_port=port), tmp_path / ".env")
        with pytest.raises(services.ServiceError, match=f"port {port}"):
            services.check_ports(labelstudio.service(settings))
