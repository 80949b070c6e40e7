"""The deployments as a user meets them: `flowtune services up` (S3, Prefect server, worker), then
`flowtune deploy`, then runs executed by the worker, each in its own clean checkout.

A scratch clone with a tiny random BERT and a synthetic data set (passed as the runs' `data_source`,
outside the clone) keeps each run to a minute or two. Two runs of the nightly deployment are started
at once: the deployment's concurrency limit makes the second wait for the first. A champion
evaluation and a data refresh then run side by side, in workspaces of their own.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.helpers import (
    NO_VARIANTS,
    clean_env,
    find_free_port,
    kill_service,
    page_commands,
    port_settings,
    scratch_clone,
    set_params,
    stop_worker,
    synthetic_splits,
    tiny_encoder,
)
from tests.leak_scan import leaks, readable_places

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 1200
# The schedules tutorial's first block (docs/tutorials/schedules.md), run here as written: services up, deploy,
# start a nightly run.
SCHEDULING_BLOCK = page_commands("docs/tutorials/schedules.md", "flowtune prefect deployment run")


class Deployed:
    """The scratch checkout with its services up and its deployments created."""

    def __init__(self, repo: Path, env: dict[str, str], api_url: str, data: Path, model_name: str):
        self.repo, self.env, self.api, self.data, self.model_name = repo, env, api_url, data, model_name

    def sh(self, *command: str) -> str:
        result = subprocess.run(command, cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    def auth(self) -> dict[str, str]:
        """The basic-auth header for the API: `services up` generated its string into the checkout's .env."""
        from flows.ops.services import prefect_auth_header
        from tasks.settings import Settings

        return prefect_auth_header(Settings(_env_file=self.repo / ".env"))

    def call(self, method: str, path: str, **kwargs):
        """One API call, retried as Prefect's own client retries: the server answers 503 (429, 502) for errors
        a client may retry, such as a busy SQLite database on a loaded machine."""
        for attempt in range(6):
            response = httpx.request(method, f"{self.api}/{path}", headers=self.auth(), timeout=30, **kwargs)
            if response.status_code not in (429, 502, 503):
                break
            time.sleep(0.5 * 2 ** attempt)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict | None = None):
        return self.call("POST", path, json=body or {})

    def get(self, path: str):
        return self.call("GET", path)

    def deployment(self, flow: str, name: str) -> dict:
        return self.get(f"deployments/name/{flow}/{name}")

    def start(self, flow: str, name: str, **parameters) -> str:
        """Create a flow run of a deployment, as the UI's "Quick run" does; its id."""
        run = self.post(f"deployments/{self.deployment(flow, name)['id']}/create_flow_run",
                        {"parameters": parameters})
        return run["id"]

    def wait(self, *run_ids: str) -> dict[str, dict]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            runs = {run_id: self.get(f"flow_runs/{run_id}") for run_id in run_ids}
            if all(run["state_type"] in TERMINAL for run in runs.values()):
                return runs
            assert time.monotonic() < deadline, {k: r["state_name"] for k, r in runs.items()}
            time.sleep(3)

    def task_names(self, flow_run_id: str) -> set[str]:
        return {t["name"] for t in self.post("task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})}

    def registry(self):
        from flows.registry import Registry
        from tasks.settings import Settings, s3_client

        settings = Settings(_env_file=self.repo / ".env", state_dir=self.repo / ".flowtune")
        return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Deployed:
    repo = scratch_clone(tmp_path_factory.mktemp("clone"))
    home = tmp_path_factory.mktemp("home")  # the tutorial's data_source is $HOME/incoming/tweets
    data = synthetic_splits(home / "incoming" / "tweets")
    model_name = f"deployed-{uuid.uuid4().hex[:8]}"
    set_params(repo, task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               augment={"methods": ["synonym"]},
               train={"base_model": str(tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))), "max_length": 32,
                      "batch_size": 8, "learning_rate": 5e-3, "epochs": 2},
               gate={"min_f1": 0.0, "min_behaviour": {"name_invariance": 0.0, "minimum_functionality": 0.0},
                     "max_latency_ms_p95": 10000},
               registry={"model_name": model_name}, compress=NO_VARIANTS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["commit", "-qam", "tiny params for the deployment test"], cwd=repo, check=True)
    ports = port_settings()
    (repo / ".env").write_text("".join(f"{k}={v}\n" for k, v in ports.items()))
    env = clean_env(PYTHONPATH=str(repo))
    api_url = f"http://127.0.0.1:{ports['FLOWTUNE_PREFECT_PORT']}/api"
    setup = Deployed(repo, env, api_url, data, model_name)
    try:
        services_up, deploy, _ = SCHEDULING_BLOCK
        setup.sh("bash", "-c", services_up)
        setup.sh("bash", "-c", deploy)
        yield setup
    finally:
        subprocess.run([".venv/bin/flowtune", "services", "down"], cwd=repo, env=env, capture_output=True)


@pytest.fixture(scope="module")
def nightly_runs(deployed: Deployed) -> dict[str, dict]:
    status_before = deployed.sh("git", "status", "--porcelain", "--ignored")
    home = deployed.data.parents[1]  # the tutorial's data_source is $HOME/incoming/tweets
    started = subprocess.run(["bash", "-c", SCHEDULING_BLOCK[-1]], cwd=deployed.repo, capture_output=True, text=True,
                             env={**deployed.env, "HOME": str(home)}, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    first = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)[1]
    second = deployed.start("flowtune-pipeline", "nightly", data_source=str(deployed.data))
    runs = deployed.wait(first, second)
    runs["status_before"] = status_before  # type: ignore[assignment]
    return runs


def test_deployments_are_created_with_schedules_parameters_and_limits(deployed: Deployed):
    nightly = deployed.deployment("flowtune-pipeline", "nightly")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 2 * * *"]
    assert nightly["schedules"][0]["schedule"]["timezone"] == "Europe/Berlin"
    assert nightly["parameters"]["workspace"] == "isolated"
    assert nightly["work_pool_name"] == "flowtune-local"
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    refresh = deployed.deployment("flowtune-data-refresh", "data-refresh")
    assert refresh["schedules"] and refresh["entrypoint"] == "flows/orchestration/pipeline.py:data_refresh"
    assert deployed.deployment("flowtune-evaluate-champion", "champion-eval")["schedules"] == []
    gpu = deployed.get("v2/concurrency_limits/gpu")
    assert gpu["limit"] >= 1 and gpu["active"]


def test_deploy_creates_the_daily_monitor_and_the_retrain_trigger_on_drift_or_new_data(deployed: Deployed):
    monitor = deployed.deployment("flowtune-monitor", "monitor")
    assert [s["schedule"]["cron"] for s in monitor["schedules"]] == ["0 6 * * *"]
    assert monitor["entrypoint"] == "flows/ops/monitor.py:drift_monitor"
    nightly = deployed.deployment("flowtune-pipeline", "nightly")
    wanted = {"flowtune: retrain on drift": ("flowtune.drift.detected", 21600),
              "flowtune: retrain on new data": ("flowtune.data.changed", 1800)}
    automations = [a for a in deployed.post("automations/filter") if a["name"] in wanted]
    assert sorted(a["name"] for a in automations) == sorted(wanted)  # made by `flowtune deploy`, seen in the UI
    for automation in automations:
        trigger, (action,) = automation["trigger"], automation["actions"]
        event, cool_down_s = wanted[automation["name"]]
        assert trigger["expect"] == [event] and trigger["within"] == cool_down_s and trigger["posture"] == "Reactive"
        assert trigger["match"] == {"prefect.resource.id": "flowtune.model.wnut16-ner"}  # params.yaml's model
        assert action["type"] == "run-deployment" and action["deployment_id"] == nightly["id"]


def test_two_nightly_runs_complete_one_after_the_other(nightly_runs: dict[str, dict]):
    runs = [run for key, run in nightly_runs.items() if key != "status_before"]
    assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
    first, second = sorted(runs, key=lambda run: run["start_time"])
    assert first["end_time"] <= second["start_time"], "two runs of one deployment overlapped"


def test_nightly_runs_work_in_their_own_checkouts(deployed: Deployed, nightly_runs: dict[str, dict]):
    # The only change in the user's checkout: the DVC cache the workspaces share (content-addressed).
    after = deployed.sh("git", "status", "--porcelain", "--ignored").replace("!! .dvc/cache/\n", "")
    assert after == nightly_runs["status_before"]
    assert not (deployed.repo / "data/raw").exists()  # nothing was built in the user's tree
    workspaces = deployed.repo / ".flowtune/workspaces"
    assert not workspaces.exists() or not list(workspaces.iterdir())  # removed after success
    registry = deployed.registry()
    # Same data, same params: the second night restores every stage from DVC's run cache (the shared cache) and
    # registers nothing ("unchanged").
    assert registry.versions(deployed.model_name) == [1]
    head = deployed.sh("git", "rev-parse", "HEAD").strip()
    run_ids = {run["id"] for key, run in nightly_runs.items() if key != "status_before"}
    lineages = [registry.manifest(deployed.model_name, 1)["metadata"]]
    assert {lineage["flow_run"]["id"] for lineage in lineages} <= run_ids
    assert all(lineage["git"]["commit"] == head for lineage in lineages)
    assert all(lineage["params"]["ingest"]["source"] == "data/external/tweets" for lineage in lineages)


def test_each_registered_version_links_its_model_card(deployed: Deployed, nightly_runs):
    run_ids = [run["id"] for key, run in nightly_runs.items() if key != "status_before"]
    query = {"artifacts": {"key": {"any_": ["registered-model"]}}, "flow_runs": {"id": {"any_": run_ids}}}
    cards = [artifact["data"] for artifact in deployed.post("artifacts/filter", query)
             if "unchanged: champion is v1" not in artifact["data"]]
    assert len(cards) == 1
    for card in cards:
        url = re.search(r"model card: \[[^\]]+\]\((http://\S+\.md)\)", card)[1]
        public = httpx.get(url, timeout=30)  # no credentials: the reports bucket is readable by a browser
        assert public.status_code == 200 and public.text.startswith(f"# {deployed.model_name}: named-entity")
        assert public.text.strip() in card  # the artifact shows the card itself too


def test_champion_evaluation_and_data_refresh_run_side_by_side(deployed: Deployed, nightly_runs):
    evaluation = deployed.start("flowtune-evaluate-champion", "champion-eval", data_source=str(deployed.data))
    refresh = deployed.start("flowtune-data-refresh", "data-refresh", data_source=str(deployed.data))
    runs = deployed.wait(evaluation, refresh)
    assert {run["state_type"] for run in runs.values()} == {"COMPLETED"}, [r["state"] for r in runs.values()]
    artifacts = deployed.post("artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [evaluation]}}})
    keys = {artifact["key"] for artifact in artifacts}
    assert "champion-evaluation" in keys and "augmentation" in keys
    card = next(a for a in artifacts if a["key"] == "champion-evaluation")["data"]
    assert f"`{deployed.model_name}:champion` (v1)" in card


@pytest.fixture()
def gpu_pool_worker(deployed: Deployed):
    """A second worker, for the train-stage pool (on a GPU machine in production), from another folder."""
    from flows.ops.services import TRAIN_POOL

    worker = subprocess.Popen([".venv/bin/prefect", "worker", "start", "--pool", TRAIN_POOL, "--name", "gpu-box"],
                              cwd=deployed.repo, env={**deployed.env, "PREFECT_API_URL": deployed.api},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    yield TRAIN_POOL
    stop_worker(worker)


def test_the_train_stage_can_run_on_another_work_pool(deployed: Deployed, nightly_runs, gpu_pool_worker: str):
    versions_before = deployed.registry().versions(deployed.model_name)
    main = deployed.start("flowtune-pipeline", "nightly", data_source=str(deployed.data),
                          train_on="flowtune-train-stage/gpu")
    assert deployed.wait(main)[main]["state_type"] == "COMPLETED"
    query = {"flows": {"name": {"any_": ["flowtune-train-stage"]}}}
    (remote,) = deployed.post("flow_runs/filter", query)
    assert remote["state_type"] == "COMPLETED" and remote["work_pool_name"] == gpu_pool_worker
    trained_there, trained_here = (deployed.task_names(run_id) for run_id in (remote["id"], main))
    assert "train" in trained_there and "evaluate" not in trained_there
    assert {"train (on flowtune-train-stage/gpu)", "evaluate", "check-unchanged"} <= trained_here
    # Same data, same seed, other machine: the same weights as the nightly v1, so nothing new is registered.
    assert deployed.registry().versions(deployed.model_name) == versions_before == [1]


def test_the_scheduler_plans_the_nightly_runs(deployed: Deployed, nightly_runs):
    """By now the server's scheduler has planned future runs of the cron deployments."""
    nightly = deployed.deployment("flowtune-pipeline", "nightly")
    query = {"flow_runs": {"deployment_id": {"any_": [nightly["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    deadline = time.monotonic() + 120
    while not (planned := deployed.post("flow_runs/filter", query)) and time.monotonic() < deadline:
        time.sleep(5)
    assert planned, "no scheduled run of the nightly deployment"
    start = datetime.fromisoformat(planned[0]["expected_start_time"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (start.hour, start.minute) == (2, 30)


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver: keeps every JSON body posted to it."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


class Notified:
    def __init__(self, token: str, run: dict, received: list[dict]):
        self.token, self.run, self.received = token, run, received


@pytest.fixture(scope="module")
def notified(deployed: Deployed) -> Notified:
    """`flowtune notify` with a webhook URL that carries a token, then a failing nightly run."""
    server = HTTPServer(("127.0.0.1", find_free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = secrets.token_urlsafe(24)
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook?token={token}"
        refused = subprocess.run([".venv/bin/flowtune", "notify", "--webhook-url", url], cwd=deployed.repo,
                                 env=deployed.env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "not on the command line" in refused.stderr
        subprocess.run([".venv/bin/flowtune", "notify"], input=url + "\n", cwd=deployed.repo, env=deployed.env,
                       check=True, capture_output=True, text=True, timeout=120)  # from stdin
        block = deployed.post("block_documents/filter", {"block_documents": {"name": {"any_": ["flowtune-failures"]}}})
        assert len(block) == 1 and token not in json.dumps(block), block  # masked by the API
        failing = deployed.start("flowtune-pipeline", "nightly", data_source="/no/such/tweets.conll")
        run = deployed.wait(failing)[failing]
        assert run["state_type"] == "FAILED"
        deadline = time.monotonic() + 90
        while not Hook.received and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        server.shutdown()
    return Notified(token, run, Hook.received)


def test_a_failed_run_is_posted_to_the_notification_webhook(notified: Notified):
    assert notified.received, "no notification reached the webhook within 90 s"
    message = notified.received[0]
    assert notified.run["name"] in message["subject"] and "Failed" in message["subject"]
    assert "/no/such/tweets.conll" in message["text"] and "does not exist" in message["text"]
    assert f"/runs/flow-run/{notified.run['id']}" in message["text"]


def kill_worker(deployed: Deployed) -> None:
    """kill -9 the checkout's Prefect worker (its whole process group), as an OOM kill or a crash would."""
    from tasks.settings import Settings

    kill_service(Settings(_env_file=deployed.repo / ".env", state_dir=deployed.repo / ".flowtune"), "prefect-worker")


def test_a_killed_worker_is_noticed_by_the_missing_run_alert_and_services_up_brings_it_back(
        deployed: Deployed, notified: Notified):
    """The worker killed: the nightly run due now stays Scheduled, and `flowtune notify --missing-run-hours`
    (a short window) posts "no Completed run"; `flowtune services up` restarts the worker, which takes the run
    (here one that fails at once on a missing data file, to keep CI short)."""
    received: list[dict] = []
    Receiver = type("Receiver", (Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", find_free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kill_worker(deployed)
    stranded = deployed.start("flowtune-pipeline", "nightly", data_source="/no/such/tweets.conll")
    try:
        installed = subprocess.run([".venv/bin/flowtune", "notify", "--missing-run-hours", "0.005"],  # 18 s
                                   input=f"http://127.0.0.1:{server.server_port}/hook?token={notified.token}\n",
                                   cwd=deployed.repo, env=deployed.env, capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, installed.stderr
        assert "0.005 hours without a Completed run of flowtune-pipeline/nightly" in installed.stdout
        deadline = time.monotonic() + 120
        while not received and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        server.shutdown()
    assert received, "no missing-run notification within 120 s"
    assert "no Completed run of flowtune-pipeline/nightly" in received[0]["subject"]
    assert "flowtune services status" in received[0]["text"]
    assert deployed.get(f"flow_runs/{stranded}")["state_type"] == "SCHEDULED"  # nobody took it

    deployed.sh(".venv/bin/flowtune", "services", "up")
    assert deployed.wait(stranded)[stranded]["state_type"] == "FAILED"  # taken by the restarted worker


def test_no_secret_in_logs_artifacts_lineage_cards_or_data_docs(deployed: Deployed, notified: Notified):
    """After scheduled runs, a failed one and its notification: the S3 secret, the Prefect password and the
    webhook's token are in none of the places others read (service and worker logs, Prefect's logs and
    artifacts, the registry, the Data Docs, the DVC remote)."""
    from tasks.settings import Settings

    settings = Settings(_env_file=deployed.repo / ".env", state_dir=deployed.repo / ".flowtune")
    secrets_ = {"S3 secret": settings.secret_key(), "webhook token": notified.token,
                "Prefect password": settings.prefect_api_auth_string.get_secret_value().partition(":")[2]}
    assert leaks(secrets_, readable_places(deployed.repo, settings, output="")) == []
