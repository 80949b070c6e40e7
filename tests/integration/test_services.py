"""flows.services against real processes: start, idempotence, auth, DVC wiring, stop, crash report."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import SecretStr

from flows import services
from tasks.settings import Settings, s3_client
from tests.helpers import ROOT, clean_env

pytestmark = pytest.mark.integration


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path(f"/proc/{pid}").exists() else True


def _git_dvc(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=workdir, capture_output=True, text=True, check=True,
                          env=clean_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                                        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com"))


# ---------------------------------------------------------------- the shared session services


def test_shared_services_are_healthy(local_services: Settings, local_service_env: dict[str, str]):
    report = services.status(local_services)
    assert all(state["healthy"] and state["pid"] for state in report.values()), report
    assert local_service_env["PREFECT_API_URL"] == local_services.api_url


def test_anonymous_requests_are_denied(local_services: Settings):
    anonymous = boto3.client("s3", endpoint_url=local_services.endpoint_url, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as listing:
        anonymous.list_objects_v2(Bucket=local_services.registry_bucket)
    assert error_code(listing) in {"AccessDenied", "403"}
    with pytest.raises(ClientError) as writing:
        anonymous.put_object(Bucket=local_services.registry_bucket, Key="anon", Body=b"x")
    assert error_code(writing) in {"AccessDenied", "403"}


def test_a_wrong_secret_is_rejected(local_services: Settings):
    wrong = local_services.model_copy(update={"s3_secret_access_key": SecretStr("not-the-secret")})
    with pytest.raises(ClientError) as info:
        s3_client(wrong).list_objects_v2(Bucket=local_services.dvc_bucket)
    assert error_code(info) in {"SignatureDoesNotMatch", "AccessDenied"}


def test_status_script_reports_every_service(local_services: Settings):
    """infra/local/status.sh from the repo root, pointed at the test services through FLOWTUNE_*."""
    env = clean_env(
        FLOWTUNE_STATE_DIR=str(local_services.state_dir.resolve()),
        FLOWTUNE_S3_PORT=str(local_services.s3_port), FLOWTUNE_PREFECT_PORT=str(local_services.prefect_port),
        FLOWTUNE_S3_ACCESS_KEY_ID=local_services.s3_access_key_id or "",
        FLOWTUNE_S3_SECRET_ACCESS_KEY=local_services.secret_key(), PYTHON=sys.executable)
    result = subprocess.run(["bash", "infra/local/status.sh"], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("healthy=yes") == 3  # S3, Prefect server, worker
    assert local_services.secret_key() not in result.stdout + result.stderr


# ---------------------------------------------------------------- a private set: the whole life cycle


def assert_private_state(workdir: Path, settings: Settings) -> None:
    """The state dir is 0700; the known secret files, and any other file holding the S3 secret, are 0600."""
    state = settings.state_dir.resolve()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for secret_file in (workdir / ".env", workdir / ".dvc" / "config.local", state / "s3.json"):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file
    secret = settings.secret_key().encode()
    for path in workdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000 \
                and secret in path.read_bytes():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} holds the S3 secret"


@pytest.mark.slow  # starts, restarts and stops a set of services of its own (~90 s)
def test_up_is_idempotent_wires_dvc_and_down_stops_everything(tmp_path: Path, start_local_services):
    started = time.monotonic()
    settings = start_local_services(tmp_path)
    cold_s = time.monotonic() - started
    try:
        assert_private_state(tmp_path, settings)
        report = services.status(settings)
        pids = {name: state["pid"] for name, state in report.items()}
        assert all(state["healthy"] for state in report.values()), report
        client = s3_client(settings)
        for bucket in (settings.dvc_bucket, settings.registry_bucket):
            client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=settings.registry_bucket, Key="keep/me.txt", Body=b"persisted")

        started = time.monotonic()
        info = services.up(settings)
        warm_s = time.monotonic() - started
        assert {name: state["pid"] for name, state in services.status(settings).items()} == pids
        assert info["s3_endpoint"] == settings.endpoint_url and info["prefect_api_url"] == settings.api_url
        print(f"\nservices.up: cold {cold_s:.1f} s, warm {warm_s:.2f} s")

        # DVC really uses the wired remote: push a file and find it in the bucket.
        _git_dvc(tmp_path, "git", "init", "-q")
        (tmp_path / "data.txt").write_text("hello dvc\n")
        _git_dvc(tmp_path, sys.executable, "-m", "dvc", "add", "-q", "data.txt")
        _git_dvc(tmp_path, sys.executable, "-m", "dvc", "push", "-q")
        pushed = client.list_objects_v2(Bucket=settings.dvc_bucket, Prefix="dvcstore/")
        assert pushed.get("KeyCount", 0) >= 1
    finally:
        services.down(settings)

    assert all(not _alive(pid) for pid in pids.values())
    assert not list(settings.state_dir.glob("*.pid"))
    report = services.status(settings)
    assert all(state["pid"] is None and not state["healthy"] for state in report.values()), report
    services.down(settings)  # idempotent: nothing left to stop

    # Data survives down/up.
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        services.up(settings)
        body = s3_client(settings).get_object(Bucket=settings.registry_bucket, Key="keep/me.txt")["Body"].read()
        assert body == b"persisted"
    finally:
        os.chdir(previous)
        services.down(settings)


def test_a_crash_during_start_raises_with_the_log(tmp_path: Path):
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")
    crashing = services.Service(
        "crashy", [sys.executable, "-c", "print('listening...'); print('fatal: bad flag'); raise SystemExit(3)"], {})
    services.start(settings, crashing)

    def never_healthy(_settings: Settings) -> None:
        raise ConnectionError("refused")

    with pytest.raises(services.ServiceError) as info:
        services.wait_healthy(settings, "crashy", never_healthy, timeout_s=30, managed=True)
    message = str(info.value)
    assert "crashy exited during start-up" in message
    assert str(settings.state_dir / "logs" / "crashy.log") in message and "fatal: bad flag" in message
