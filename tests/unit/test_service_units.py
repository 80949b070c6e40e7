"""`flowtune services install`: systemd user units that run what `services up` runs, and keep no secret."""

from __future__ import annotations

import shlex
import shutil
import stat
import subprocess
from pathlib import Path

from flows.ops import services
from flows.ops.services.units import install, quote


def settings_in(folder: Path) -> services.Settings:
    return services.Settings(_env_file=None, state_dir=folder / ".flowtune", s3_access_key_id="key",
                             s3_secret_access_key="s3-secret", prefect_api_auth_string="admin:prefect-secret")


def parse(unit: Path) -> dict[str, list[str]]:
    """key -> every value it has in the unit (EnvironmentFile, for one, appears twice)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("[", "#")):
            found.setdefault(key, []).append(value)
    return found


def test_the_units_run_the_services_commands_in_order_with_restart(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = settings_in(tmp_path)
    written = install(settings, tmp_path / "units", checkout=tmp_path)
    by_service = {path.name.removesuffix(".service").split("-", 2)[2]: parse(path) for path in written}
    expected = {"seaweedfs": services.seaweedfs(settings), "prefect-server": services.prefect_server(settings),
                "prefect-worker": services.prefect_worker(settings)}
    assert set(by_service) == set(expected)
    for name, unit in by_service.items():
        assert shlex.split(unit["ExecStart"][0]) == expected[name].command  # the very command `up` runs
        assert unit["Restart"] == ["on-failure"]
        assert unit["EnvironmentFile"][0] == f"-{tmp_path / '.env'}"
    worker, others = by_service["prefect-worker"], [p.name for p in written if "worker" not in p.name]
    assert sorted(worker["Requires"][0].split()) == sorted(others)
    assert set(others) <= set(worker["After"][0].split())
    assert by_service["prefect-server"]["UnsetEnvironment"] == ["PREFECT_API_URL"]


def test_secrets_stay_out_of_the_unit_files_in_private_environment_files(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = install(settings_in(tmp_path), tmp_path / "units", checkout=tmp_path)
    assert not any("prefect-secret" in path.read_text() or "s3-secret" in path.read_text() for path in written)
    server_env = tmp_path / ".flowtune" / "systemd" / "prefect-server.env"
    assert 'PREFECT_SERVER_API_AUTH_STRING="admin:prefect-secret"' in server_env.read_text()
    assert stat.S_IMODE(server_env.stat().st_mode) == 0o600


def test_systemd_accepts_the_units(tmp_path: Path, monkeypatch):
    """`systemd-analyze verify` where systemd is installed (it checks syntax and that ExecStart exists);
    elsewhere, each ExecStart's program exists and is executable."""
    monkeypatch.chdir(tmp_path)
    written = install(settings_in(tmp_path), tmp_path / "units", checkout=tmp_path)
    if shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, written)],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
    else:
        for path in written:
            program = Path(shlex.split(parse(path)["ExecStart"][0])[0])
            assert program.is_file() and program.stat().st_mode & 0o111, program


def test_execstart_arguments_are_escaped_for_systemd():
    assert quote("-dir=/a b/c") == '"-dir=/a b/c"'
    assert quote("50%") == "50%%" and quote("$HOME") == "$$HOME"


def test_the_cli_writes_the_units_into_dest(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, value in {"FLOWTUNE_STATE_DIR": str(tmp_path / ".flowtune"), "FLOWTUNE_S3_ACCESS_KEY_ID": "k",
                       "FLOWTUNE_S3_SECRET_ACCESS_KEY": "s", "PREFECT_API_AUTH_STRING": "admin:x"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # A database URL: `install` does not seed a SQLite file (a first seed migrates one, ~20 s of CPU).
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://unused@127.0.0.1/none")
    assert services.services_main(["install", "--dest", str(tmp_path / "units")]) == 0
    assert len(list((tmp_path / "units").glob("flowtune-*.service"))) == 3
    assert "systemctl --user enable --now" in capsys.readouterr().out
