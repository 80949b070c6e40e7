"""flows.ops.services against real processes: start, idempotence, auth, DVC wiring, stop, crash report."""

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

from flows.ops import services
from tasks.settings import Settings, s3_client
from tests.helpers import ROOT, api_client, clean_env

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
        FLOWTUNE_S3_SECRET_ACCESS_KEY=local_services.secret_key(), PYTHON=sys.executable,
        **services.prefect_auth_env(local_services))
    result = subprocess.run(["bash", "infra/local/status.sh"], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("healthy=yes") == 3  # S3, Prefect server, worker
    assert local_services.secret_key() not in result.stdout + result.stderr
    assert local_services.prefect_api_auth_string.get_secret_value() not in result.stdout + result.stderr


# ---------------------------------------------------------------- a private set: the whole life cycle


def assert_private_state(workdir: Path, settings: Settings) -> None:
    """The state dir is 0700; the known secret files, and any other file holding the S3 secret, are 0600;
    the Prefect auth string is in `.env` only (not in a log, the Prefect DB or a profile)."""
    state = settings.state_dir.resolve()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for secret_file in (workdir / ".env", workdir / ".dvc" / "config.local", state / "s3.json",
                        state / "security.toml"):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file
    secrets_ = {"the S3 secret": settings.secret_key().encode(),
                "the Prefect auth string": settings.prefect_api_auth_string.get_secret_value().encode()}
    for path in workdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            content = path.read_bytes()
            for what, secret in secrets_.items():
                if secret in content:
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} holds {what}"
                    assert path.name == ".env" or what != "the Prefect auth string", f"{path} holds {what}"


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
    assert "crashy exited during start-up" in message and "exit code 3" in message
    assert str(settings.state_dir / "logs" / "crashy.log") in message and "fatal: bad flag" in message


def test_a_service_is_running_the_moment_its_start_returns(tmp_path: Path):
    """Right after `Popen` returns, a busy kernel may still show the child's command line empty (the exec has
    begun but not set the arguments); that must not read as "exited" (it failed CI's Label Studio start)."""
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")
    sleeper = services.Service("label-studio", [sys.executable, "-c", "import time; time.sleep(30)", "label_studio"],
                               {})
    for _ in range(40):
        pid = services.start(settings, sleeper)
        try:
            assert services.running_pid(settings, "label-studio") == pid
        finally:
            services.stop(settings, "label-studio")


def test_a_service_killed_during_start_says_by_which_signal(tmp_path: Path):
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")
    killed = services.Service("killed", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"], {})
    services.start(settings, killed)

    def never_healthy(_settings: Settings) -> None:
        raise ConnectionError("refused")

    with pytest.raises(services.ServiceError) as info:
        services.wait_healthy(settings, "killed", never_healthy, timeout_s=30, managed=True)
    assert "killed by SIGKILL (the kernel's out-of-memory killer, or another process)" in str(info.value)


# ---------------------------------------------------------------- only the S3 port reaches stored data


def _weed_shell(settings: Settings, command: str, cwd: Path, timeout_s: float = 60) -> str:
    """Run one `weed shell` command against the test SeaweedFS over its loopback gRPC ports. weed reads
    `./security.toml` from `cwd`: from the state dir it presents our client certificate, elsewhere none.
    A shell refused by every server keeps retrying: after `timeout_s` its output so far is returned."""
    weed = Path(sys.executable).parent / "weed"
    try:
        result = subprocess.run([str(weed), "shell", f"-master=127.0.0.1:{settings.seaweed_master_port}",
                                 f"-filer=127.0.0.1:{settings.seaweed_filer_port}"], cwd=cwd,
                                input=command + "\n", capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as stuck:
        return "(timed out) " + "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                                        for part in (stuck.stdout, stuck.stderr))
    return result.stdout + result.stderr


def _volume_file_id(settings: Settings, bucket: str, key: str) -> str:
    """The volume file id ("3,01637037d6") holding the object's bytes, from the filer's metadata."""
    import re

    listing = _weed_shell(settings, f"fs.meta.cat /buckets/{bucket}/{key}", cwd=settings.state_dir.resolve())
    found = re.search(r'"file_id":\s*"([0-9]+,[0-9a-f]+)"', listing) or \
        re.search(r'"fileId":\s*"([0-9]+,[0-9a-f]+)"', listing)
    assert found, listing
    return found.group(1)


def test_the_filer_port_refuses_reads_and_writes_without_a_token(local_services: Settings):
    import httpx

    settings, bucket = local_services, local_services.registry_bucket
    s3_client(settings).put_object(Bucket=bucket, Key="filer/kept.txt", Body=b"via s3")
    filer = f"http://127.0.0.1:{settings.seaweed_filer_port}/buckets/{bucket}"
    for method, path in (("PUT", "filer/forged.txt"), ("POST", "filer/forged.txt"), ("GET", "filer/kept.txt"),
                         ("GET", "filer/"), ("DELETE", "filer/kept.txt")):
        response = httpx.request(method, f"{filer}/{path}", content=b"forged" if method in {"PUT", "POST"} else None)
        # 404: `-disableHttp` turns the filer's HTTP API off with the master's (the S3 gateway uses gRPC);
        # the filer JWTs of security.toml stay as the second lock should it ever be turned on again.
        assert response.status_code in {401, 403, 404}, (method, path, response.status_code, response.text)
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=bucket, Prefix="filer/")["Contents"]]
    assert keys == ["filer/kept.txt"]  # nothing written, nothing deleted
    body = s3_client(settings).get_object(Bucket=bucket, Key="filer/kept.txt")["Body"].read()
    assert body == b"via s3"  # the S3 API with keys still reads and writes


def test_the_volume_port_refuses_reads_and_writes_without_a_token(local_services: Settings):
    import httpx

    settings, bucket = local_services, local_services.registry_bucket
    s3_client(settings).put_object(Bucket=bucket, Key="volume/kept.txt", Body=b"stored bytes")
    volume = f"http://127.0.0.1:{settings.seaweed_volume_port}"
    file_id = _volume_file_id(settings, bucket, "volume/kept.txt")
    read = httpx.get(f"{volume}/{file_id}")
    assert read.status_code in {401, 403} and b"stored bytes" not in read.content, read.status_code
    new_file_id = file_id.split(",")[0] + ",7f00000001deadbeef"  # same volume, a needle that does not exist
    written = httpx.post(f"{volume}/{new_file_id}", files={"file": ("forged", b"forged")})
    assert written.status_code in {401, 403}, written.text
    overwritten = httpx.post(f"{volume}/{file_id}", files={"file": ("forged", b"forged")})
    assert overwritten.status_code in {401, 403}, overwritten.text
    assert s3_client(settings).get_object(Bucket=bucket, Key="volume/kept.txt")["Body"].read() == b"stored bytes"


def test_the_master_http_admin_api_is_off(local_services: Settings):
    """SeaweedFS's master takes admin calls over HTTP with no token: one GET to /col/delete (a local user,
    or an <img> on a web page the developer opens) dropped the registry bucket's volumes. `-disableHttp`
    turns that API off; the data stays readable through S3, and admin work goes over mutual-TLS gRPC."""
    import httpx

    settings, bucket = local_services, local_services.registry_bucket
    s3_client(settings).put_object(Bucket=bucket, Key="master/kept.txt", Body=b"kept")
    master = f"http://127.0.0.1:{settings.seaweed_master_port}"
    for path in (f"col/delete?collection={bucket}", "vol/grow?count=1", "vol/vacuum", "dir/assign",
                 f"vol/status?collection={bucket}", "submit"):
        answer = httpx.get(f"{master}/{path}")
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
    assert s3_client(settings).get_object(Bucket=bucket, Key="master/kept.txt")["Body"].read() == b"kept"


def test_the_grpc_ports_refuse_clients_without_our_certificate(local_services: Settings, tmp_path: Path):
    """`weed shell` (gRPC to master and filer) could list, read and delete filer entries; mutual TLS
    refuses it unless it presents a certificate signed by the install's own CA."""
    settings, bucket = local_services, local_services.registry_bucket
    s3_client(settings).put_object(Bucket=bucket, Key="grpc/kept.txt", Body=b"kept")
    outsider = _weed_shell(settings, f"fs.ls /buckets/{bucket}/grpc", cwd=tmp_path, timeout_s=15)
    assert "kept.txt" not in outsider, outsider
    insider = _weed_shell(settings, f"fs.ls /buckets/{bucket}/grpc", cwd=settings.state_dir.resolve())
    assert "kept.txt" in insider, insider  # the same command with the certificate: the check is real
    _weed_shell(settings, f"fs.rm /buckets/{bucket}/grpc/kept.txt", cwd=tmp_path, timeout_s=15)
    assert s3_client(settings).get_object(Bucket=bucket, Key="grpc/kept.txt")["Body"].read() == b"kept"


def test_anonymous_s3_may_only_get_report_objects(local_services: Settings):
    settings, bucket = local_services, local_services.reports_bucket
    s3_client(settings).put_object(Bucket=bucket, Key="docs/index.html", Body=b"<html>report</html>")
    anonymous = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
    assert anonymous.get_object(Bucket=bucket, Key="docs/index.html")["Body"].read() == b"<html>report</html>"
    with pytest.raises(ClientError) as listing:
        anonymous.list_objects_v2(Bucket=bucket)
    assert error_code(listing) in {"AccessDenied", "403"}
    with pytest.raises(ClientError) as writing:
        anonymous.put_object(Bucket=bucket, Key="docs/index.html", Body=b"defaced")
    assert error_code(writing) in {"AccessDenied", "403"}
    with pytest.raises(ClientError) as deleting:
        anonymous.delete_object(Bucket=bucket, Key="docs/index.html")
    assert error_code(deleting) in {"AccessDenied", "403"}
    with pytest.raises(ClientError) as other_bucket:
        anonymous.get_object(Bucket=settings.registry_bucket, Key="filer/kept.txt")
    assert error_code(other_bucket) in {"AccessDenied", "403", "NoSuchKey", "404"}
    assert s3_client(settings).get_object(Bucket=bucket, Key="docs/index.html")["Body"].read() == b"<html>report</html>"


def test_cors_allows_only_the_prefect_ui_origin(local_services: Settings):
    import httpx

    settings = local_services
    preflight = {"Access-Control-Request-Method": "PUT"}
    for port in (settings.s3_port, settings.seaweed_filer_port):
        url = f"http://127.0.0.1:{port}/{settings.registry_bucket}/x"
        evil = httpx.options(url, headers={"Origin": "http://evil.example", **preflight})
        assert evil.headers.get("access-control-allow-origin") not in {"*", "http://evil.example"}, (port, evil.headers)
    security = (settings.state_dir.resolve() / "security.toml")
    assert stat.S_IMODE(security.stat().st_mode) == 0o600
    assert '[cors.allowed_origins]\nvalues = "http://127.0.0.1:' in security.read_text()


# ---------------------------------------------------------------- the Prefect API needs its auth string


def test_the_prefect_api_refuses_calls_without_the_auth_string(local_services: Settings):
    import base64

    import httpx

    api = local_services.api_url
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    for headers in ({}, wrong):
        assert httpx.post(f"{api}/flows/filter", json={}, headers=headers).status_code == 401
        deployment = {"name": "intruder", "flow_id": "00000000-0000-0000-0000-000000000000"}
        assert httpx.post(f"{api}/deployments/", json=deployment, headers=headers).status_code == 401
    with api_client(local_services) as client:
        assert client.post("flows/filter", json={}).status_code == 200
    assert httpx.get(f"{api}/health").status_code == 200  # liveness probes need no login


def test_a_client_with_service_env_runs_a_flow_on_the_authenticated_server(local_services: Settings, tmp_path):
    """A flow run in a subprocess, configured only by `service_env` (as the CLI and the worker are)."""
    script = "from prefect import flow\n@flow(name='auth-probe')\ndef probe():\n    return 1\nprobe()\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=clean_env(**services.service_env(local_services)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    query = {"flows": {"name": {"any_": ["auth-probe"]}}}
    with api_client(local_services) as client:
        runs = client.post("flow_runs/filter", json=query).json()
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    secret = local_services.prefect_api_auth_string.get_secret_value()
    assert secret not in result.stdout + result.stderr
