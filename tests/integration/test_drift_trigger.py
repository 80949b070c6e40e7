"""Drift and new data start training, once per cool-down, on a real Prefect server (tests/conftest.py
`local_services`): the nightly deployment's triggers exactly as prefect.yaml defines it (what `flowtune deploy`
installs), bursts of `flowtune.drift.detected` and `flowtune.data.changed` events, and the flow runs the
server's automations create. And the drift automation of `flowtune notify` posts what drifted to a webhook."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from flows.ops.monitor import DATA_CHANGED_EVENT, DRIFT_EVENT
from tasks.settings import Settings
from tests.helpers import ROOT, find_free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # waits for the server's automations (~1 min)


@pytest.fixture(scope="module")
def client(local_services: Settings) -> Iterator:
    """A Prefect client of the session's server (its URL and auth string for this module only)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    auth = local_services.prefect_api_auth_string
    updates = {PREFECT_API_URL: local_services.api_url}
    if auth is not None:
        updates[PREFECT_API_AUTH_STRING] = auth.get_secret_value()
    with temporary_settings(updates=updates), get_client(sync_client=True) as prefect:
        yield prefect


def send(events: list[tuple[str, str, dict]]) -> None:
    """Emit (event, model, payload) in order, each acknowledged by the server before the next."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    async def emit() -> None:
        async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as events:
            for name, model, payload in events_list:
                await events.emit(Event(event=name, resource={"prefect.resource.id": f"flowtune.model.{model}",
                                                              "prefect.resource.name": model}, payload=payload))

    events_list = events
    asyncio.run(emit())


def nightly_triggers(model: str) -> list:
    """prefect.yaml's triggers of the nightly deployment, about `model` instead of params.yaml's (this test's own)."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    (nightly,) = [d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
                  if d["name"] == "nightly"]
    return [DeploymentEventTrigger.model_validate({**spec, "match": {"prefect.resource.id": f"flowtune.model.{model}"}})
            for spec in nightly["triggers"]]


def runs_of(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def test_a_burst_of_drift_and_data_events_starts_one_run_per_kind_of_event(client):
    """Drift, then new data inside the drift's cool-down: the batch still starts its own run (one trigger per
    event); a burst of each starts only one."""
    model = f"trigger-{uuid.uuid4().hex[:8]}"
    flow_id = client.create_flow_from_name(f"flowtune-pipeline-{model}")
    deployment_id = client.create_deployment(flow_id=flow_id, name="nightly")
    triggers = nightly_triggers(model)
    for trigger in triggers:
        trigger.set_deployment_id(deployment_id)
        client.create_automation(trigger.as_automation())
    time.sleep(3)  # the server's trigger service loads the new automations
    send([(DRIFT_EVENT, "someone-else", {"summary": "another model"})])  # not this deployment's model
    send([(DRIFT_EVENT, model, {"summary": "url"}), (DRIFT_EVENT, model, {"summary": "words"})])
    wait_for_runs(client, deployment_id, 1)
    send([(DATA_CHANGED_EVENT, model, {"rows": 5}), (DRIFT_EVENT, model, {"summary": "url"}),
          (DATA_CHANGED_EVENT, model, {"rows": 7})])
    wait_for_runs(client, deployment_id, 2)
    time.sleep(10)  # time for a third run, if a cool-down let one through
    runs = runs_of(client, deployment_id)
    assert len(runs) == 2, [(r.name, r.created) for r in runs]
    assert sorted(t.within.total_seconds() for t in triggers) == [1800, 21600]


def wait_for_runs(client, deployment_id, count: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(runs_of(client, deployment_id)) < count and time.monotonic() < deadline:
        time.sleep(1)
    assert len(runs_of(client, deployment_id)) == count, f"expected {count} run(s) within {timeout_s} s"


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_drift_automation_posts_what_drifted_to_the_webhook(client):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.ops.notify import drift_automation

    server = HTTPServer(("127.0.0.1", find_free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name = f"drift-test-{uuid.uuid4().hex[:8]}"
        block = CustomWebhookNotificationBlock(name=name, url=f"http://127.0.0.1:{server.server_port}/hook",
                                               json_data={"subject": "{{subject}}", "text": "{{body}}"})
        block_id = block.save(name, overwrite=True)
        automation = drift_automation(block_id)
        automation.name = f"{automation.name} {uuid.uuid4().hex[:6]}"
        automation.create()  # as `flowtune notify` does (flows/ops/notify.py install)
        time.sleep(3)
        model = f"hook-{uuid.uuid4().hex[:8]}"
        summary = f"{model} v3 drifted on 1000 items: url (PSI 2.100 > 0.2: 5.0% -> 80.0%)"
        send([(DRIFT_EVENT, model, {"model": model, "version": 3, "summary": summary, "report": "http://r/x.json"})])
        deadline = time.monotonic() + 90
        while not [m for m in Hook.received if model in m["subject"]] and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        server.shutdown()
    (message,) = [m for m in Hook.received if model in m["subject"]]
    assert message["subject"] == f"flowtune: {model} v3 drifted"
    assert summary in message["text"] and "Report: http://r/x.json" in message["text"]
