"""The automations `flowtune notify` installs: what they listen for (tests/integration/test_deployments.py
shows them delivering on a real server)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import yaml

from flows.names import GC_FLOW, PIPELINE_FLOW, SWEEP_FLOW
from flows.ops.notify import FLOWS, NIGHTLY_DEPLOYMENT, failure_automation, missing_run_automation
from tests.helpers import ROOT


def related_spec(trigger) -> dict:
    related = trigger.match_related[0] if isinstance(trigger.match_related, list) else trigger.match_related
    return dict(related.items())


def test_failures_of_gc_and_sweeps_are_notified_like_training_failures():
    trigger = failure_automation(uuid4()).trigger
    assert {GC_FLOW, SWEEP_FLOW, PIPELINE_FLOW} <= set(FLOWS)
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert set(related_spec(trigger)["prefect.resource.name"]) == set(FLOWS)


def test_a_missing_nightly_run_is_an_absence_of_completed_runs_of_that_deployment():
    automation = missing_run_automation(uuid4(), hours=26)
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.expect == {"prefect.flow-run.Completed"}
    assert trigger.within == timedelta(hours=26) and trigger.threshold == 1
    assert related_spec(trigger) == {"prefect.resource.role": ["deployment"],
                                     "prefect.resource.name": [NIGHTLY_DEPLOYMENT]}
    assert "in 26 hours" in automation.actions[0].subject
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    nightly = [d for d in deployments if d["name"] == NIGHTLY_DEPLOYMENT]
    assert len(nightly) == 1 and nightly[0]["entrypoint"].endswith(":training_pipeline")  # the deployment it watches
    assert nightly[0].get("schedules"), "the nightly deployment has a schedule, so its absence means something"


def test_drift_is_posted_with_the_measures_the_monitor_names():
    from flows.names import MONITOR_FLOW
    from flows.ops.monitor import DRIFT_EVENT
    from flows.ops.notify import drift_automation

    automation = drift_automation(uuid4())
    assert automation.trigger.expect == {DRIFT_EVENT} and automation.trigger.posture == "Reactive"
    assert dict(automation.trigger.match.items()) == {"prefect.resource.id": ["flowtune.model.*"]}
    assert "{{ event.payload.summary }}" in automation.actions[0].body  # flows/ops/monitor.py drift_events writes it
    assert "{{ event.payload.model }}" in automation.actions[0].subject
    assert MONITOR_FLOW in FLOWS  # a failed monitor run is posted like any other
