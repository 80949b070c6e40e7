"""The team stack of infra/compose on a real Docker engine (`make test-stack`; not in `make test`, see
docs/DECISIONS.md 72): images built by infra/images/build.sh (cached when the engine has them), `docker
compose up`, a training run of the `nightly` deployment executed by the compose worker on tiny data, the
version it registers served by flowtune-serve, then `docker compose down -v` and nothing left.

The worker gets a scratch clone of this checkout at the same path as on the host (a bind mount): Prefect
records a deployment's path, and each run works in a git checkout of it (the image carries no .git).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import NO_VARIANTS, ROOT, find_free_port, scratch_clone, set_params, synthetic_splits, tiny_encoder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPOSE_FILE = ROOT / "infra/compose/docker-compose.yml"
LONG_RUNNING = ("postgres", "prefect-server", "s3", "worker")
RUN_TIMEOUT_S = 1500


def docker(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:4])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


class Stack:
    def __init__(self, project: str, env_file: Path, override: Path, env: dict[str, str], clone: Path):
        self.project, self.env_file, self.override, self.env, self.clone = project, env_file, override, env, clone

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return docker("compose", "-p", self.project, "-f", str(COMPOSE_FILE), "-f", str(self.override),
                      "--env-file", str(self.env_file), *args, timeout=timeout, check=check)

    def url(self, service: str) -> str:
        port = {"prefect-server": "PREFECT_PORT", "s3": "S3_PORT", "flowtune-serve": "FLOWTUNE_SERVE_PORT"}[service]
        return f"http://127.0.0.1:{self.env[port]}"

    def api(self, method: str, path: str, **kwargs):
        user, password = self.env["PREFECT_API_AUTH_STRING"].split(":", 1)
        response = httpx.request(method, f"{self.url('prefect-server')}/api/{path}", auth=(user, password),
                                 timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def s3(self, keys: str = "FLOWTUNE_S3"):
        import boto3

        return boto3.client("s3", endpoint_url=self.url("s3"), region_name="us-east-1",
                            aws_access_key_id=self.env[f"{keys}_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env[f"{keys}_SECRET_ACCESS_KEY"])

    def states(self) -> dict[str, dict]:
        lines = self.compose("ps", "-a", "--format", "json").stdout.splitlines()
        return {row["Service"]: row for row in map(json.loads, filter(None, lines))}

    def wait_healthy(self, services, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.states()
            if all(states.get(name, {}).get("Health") == "healthy" for name in services):
                return
            if time.monotonic() > deadline:
                logs = self.compose("logs", "--tail", "30", check=False).stdout
                raise AssertionError(f"not healthy after {timeout_s} s: "
                                     f"{ {n: (s.get('State'), s.get('Health')) for n, s in states.items()} }\n{logs}")
            time.sleep(3)


def stack_env() -> dict[str, str]:
    """infra/compose/.env for this test: fresh secrets, free host ports (a user's stack may hold the defaults)."""
    def token() -> str:
        return secrets.token_hex(16)

    return {"POSTGRES_PASSWORD": token(), "S3_ROOT_ACCESS_KEY_ID": "root" + token()[:12],
            "S3_ROOT_SECRET_ACCESS_KEY": token(), "FLOWTUNE_S3_ACCESS_KEY_ID": "worker" + token()[:12],
            "FLOWTUNE_S3_SECRET_ACCESS_KEY": token(), "PREFECT_API_AUTH_STRING": f"admin:{token()}",
            "FLOWTUNE_SERVE_S3_ACCESS_KEY_ID": "serve" + token()[:12], "FLOWTUNE_SERVE_S3_SECRET_ACCESS_KEY": token(),
            "FLOWTUNE_SERVE_TOKEN": token(), "PREFECT_PORT": str(find_free_port()), "S3_PORT": str(find_free_port()),
            "FLOWTUNE_SERVE_PORT": str(find_free_port())}


def prepared_clone(tmp: Path, model_name: str) -> tuple[Path, Path]:
    """A scratch clone with tiny params and a synthetic data set outside it (the runs' data_source)."""
    clone = scratch_clone(tmp / "clone")
    data = synthetic_splits(tmp / "incoming" / "tweets")
    set_params(clone, task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": ["synonym"]},
               train={"base_model": str(tiny_encoder(tmp / "tiny-bert")), "max_length": 32, "batch_size": 8,
                      "learning_rate": 5e-3, "epochs": 2},
               gate={"min_f1": 0.0, "min_behaviour": {"name_invariance": 0.0, "minimum_functionality": 0.0},
                     "max_latency_ms_p95": 10000},
               registry={"model_name": model_name}, compress=NO_VARIANTS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["commit", "-qam", "tiny params for the stack test"], cwd=clone, check=True)
    return clone, data


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    assert shutil.which("docker") and docker("info", check=False, timeout=60).returncode == 0, \
        "no Docker engine answers: `make test-stack` needs one (docs/tutorials/more-machines.md, The team stack)"
    started = time.monotonic()
    subprocess.run(["bash", "infra/images/build.sh"], cwd=ROOT, check=True, timeout=3600)
    print(f"images ready in {time.monotonic() - started:.0f} s")
    tmp = tmp_path_factory.mktemp("stack")
    model_name = f"stack-{uuid.uuid4().hex[:8]}"
    clone, data = prepared_clone(tmp, model_name)
    env = {**stack_env(), "FLOWTUNE_SERVE_MODEL": f"{model_name}:champion"}
    env_file = tmp / "stack.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    # The worker sees the clone, the data and the tiny encoder at their host paths.
    mounts = [f"{tmp}:{tmp}"]
    override = tmp / "override.yml"
    override.write_text(yaml.safe_dump({"services": {"worker": {"volumes": mounts}}}))
    setup = Stack(f"flowtune-test-{uuid.uuid4().hex[:8]}", env_file, override, env, clone)
    setup.data = data  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        setup.compose("up", "-d", timeout=900)
        setup.wait_healthy(LONG_RUNNING)
        print(f"stack healthy in {time.monotonic() - started:.0f} s")
        yield setup
    finally:
        setup.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        left = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={setup.project}").stdout.split()
        volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={setup.project}")
        networks = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={setup.project}")
        leftovers = {"containers": left, "volumes": volumes.stdout.split(), "networks": networks.stdout.split()}
        assert not any(leftovers.values()), f"left after down -v: {leftovers}"


@pytest.fixture(scope="module")
def training_run(stack: Stack) -> dict:
    """`flowtune deploy` inside the worker, then a run of the nightly deployment, executed by the worker."""
    stack.compose("exec", "-T", "-w", str(stack.clone), "worker", "flowtune", "deploy", timeout=600)
    deployment = stack.api("GET", "deployments/name/flowtune-pipeline/nightly")
    run = stack.api("POST", f"deployments/{deployment['id']}/create_flow_run",
                    json={"parameters": {"data_source": str(stack.data)}})  # type: ignore[attr-defined]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := stack.api("GET", f"flow_runs/{run['id']}"))["state_type"] not in \
            {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
        assert time.monotonic() < deadline, f"run still {state['state_name']} after {RUN_TIMEOUT_S} s"
        time.sleep(5)
    return state


def test_services_are_healthy_and_the_init_job_succeeded(stack: Stack):
    states = stack.states()
    assert all(states[name]["Health"] == "healthy" for name in LONG_RUNNING), states
    assert states["bucket-init"]["State"] == "exited" and states["bucket-init"]["ExitCode"] == 0


def test_the_worker_is_registered_with_the_server_under_its_login(stack: Stack):
    assert httpx.get(f"{stack.url('prefect-server')}/api/admin/version", timeout=10).status_code == 401
    workers = stack.api("POST", "work_pools/flowtune-local/workers/filter", json={})
    assert [worker["status"] for worker in workers] == ["ONLINE"], workers


def test_the_buckets_exist_and_each_key_reaches_only_what_it_should(stack: Stack):
    from botocore.exceptions import ClientError

    worker, serve = stack.s3(), stack.s3("FLOWTUNE_SERVE_S3")
    for bucket in ("flowtune-dvc", "flowtune-registry", "flowtune-reports", "flowtune-capture"):
        worker.put_object(Bucket=bucket, Key="probe", Body=b"ok")
        worker.delete_object(Bucket=bucket, Key="probe")
    serve.list_objects_v2(Bucket="flowtune-registry")
    serve.put_object(Bucket="flowtune-capture", Key="probe.jsonl.gz", Body=b"x")  # `--capture` writes there ...
    for call in (lambda: serve.put_object(Bucket="flowtune-registry", Key="x", Body=b"x"),
                 lambda: serve.list_objects_v2(Bucket="flowtune-dvc"),
                 lambda: serve.get_object(Bucket="flowtune-capture", Key="probe.jsonl.gz")):  # ... never reads back
        with pytest.raises(ClientError):
            call()
    assert httpx.get(f"{stack.url('s3')}/flowtune-reports", timeout=10).status_code == 403  # no anonymous listing


def test_every_published_port_is_on_loopback_only(stack: Stack):
    ids = stack.compose("ps", "-q").stdout.split()
    published = [binding for container in json.loads(docker("inspect", *ids).stdout)
                 for bindings in (container["NetworkSettings"]["Ports"] or {}).values() for binding in bindings or []]
    assert published and {binding["HostIp"] for binding in published} == {"127.0.0.1"}, published


def test_the_image_carries_no_secret_from_its_build_context(stack: Stack, tmp_path):
    """Build the app image from a checkout holding secrets (.env, DVC's config.local, S3 keys), then search
    the image's whole filesystem for their values."""
    context = scratch_clone(tmp_path / "ctx")
    planted = {name: f"planted-{secrets.token_hex(12)}" for name in
               (".env", "infra/compose/.env", ".dvc/config.local", ".flowtune/s3.json")}
    for name, value in planted.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(f"SECRET={value}\n")
    canary = f"canary-{secrets.token_hex(12)}"  # in a file that is copied: proves the search finds a value
    (context / "canary.txt").write_text(canary + "\n")
    tag = f"flowtune-secret-scan:{uuid.uuid4().hex[:8]}"
    docker("build", "-q", "-f", "infra/compose/Dockerfile", "-t", tag, str(context), timeout=900)
    try:
        patterns = " ".join(f"-e {value}" for value in [*planted.values(), canary])
        found = docker("run", "--rm", "--entrypoint", "/bin/sh", tag, "-c",
                       f"grep -rlF {patterns} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev || true",
                       timeout=900).stdout.split()
        assert found == ["/opt/flowtune/canary.txt"], f"secret values in the image: {found}"
    finally:
        docker("image", "rm", "-f", tag, check=False)


def test_a_training_run_through_the_worker_registers_a_version_that_serve_answers_with(stack: Stack, training_run):
    assert training_run["state_type"] == "COMPLETED", training_run["state"]
    model_name = stack.env["FLOWTUNE_SERVE_MODEL"].split(":")[0]
    listed = stack.s3().list_objects_v2(Bucket="flowtune-registry")
    assert any(model_name in item["Key"] for item in listed.get("Contents", [])), listed.get("Contents")
    stack.wait_healthy(["flowtune-serve"], timeout_s=600)  # /readyz: the champion is loaded and warmed up
    url, token = stack.url("flowtune-serve"), stack.env["FLOWTUNE_SERVE_TOKEN"]
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["Ann went to Paris"]}, timeout=30).status_code == 401
    answer = httpx.post(f"{url}/v1/predict", json={"texts": ["Ann went to Paris"]}, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
