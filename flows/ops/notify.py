"""`flowtune notify`: tell a webhook when a flowtune flow run fails or crashes, when the nightly run
is missing, or when the drift monitor finds drift (Prefect automations).

It saves a Custom Webhook notification block and three automations: one fires on every `Failed` or
`Crashed` flow run of the flowtune flows (training, data refresh, champion evaluation, gc, sweeps, monitor),
sending the run's name, state message and UI link; another (a proactive trigger) fires when the nightly
deployment has had no `Completed` run for `missing_run_hours` (26 by default: a nightly schedule plus
slack), which is what a dead worker, a paused schedule or a run stuck in Late looks like from outside; the
third posts each `flowtune.drift.detected` event of the monitor (flows/ops/monitor.py) with what drifted.
Running it again replaces all three (same names). Delivery is done by the Prefect server's automation
services, so it works for scheduled runs with nobody watching.
"""

from __future__ import annotations

from datetime import timedelta

from flows.names import DATA_REFRESH_FLOW, EVALUATE_CHAMPION_FLOW, GC_FLOW, MONITOR_FLOW, PIPELINE_FLOW, SWEEP_FLOW

FLOWS = (PIPELINE_FLOW, DATA_REFRESH_FLOW, EVALUATE_CHAMPION_FLOW, GC_FLOW, SWEEP_FLOW, MONITOR_FLOW)
BLOCK_NAME = "flowtune-failures"
AUTOMATION_NAME = "flowtune: flow run failed"
SUBJECT = "flowtune run {{ flow_run.name }} ({{ flow.name }}) is {{ flow_run.state.name }}"
BODY = "{{ flow_run.state.message }}\nFlow run: {{ flow_run|ui_url }}"
NIGHTLY_DEPLOYMENT = "nightly"  # prefect.yaml's scheduled retraining of PIPELINE_FLOW
MISSING_RUN_HOURS = 26.0
MISSING_AUTOMATION_NAME = "flowtune: nightly run missing"
DRIFT_AUTOMATION_NAME = "flowtune: drift detected"
# The monitor's event carries its own summary (flows/ops/monitor.py `drift_events`): which measures crossed, how far.
DRIFT_SUBJECT = "flowtune: {{ event.payload.model }} v{{ event.payload.version }} drifted"
DRIFT_BODY = ("{{ event.payload.summary }}\nReport: {{ event.payload.report }}\nA retraining of the nightly deployment "
              "starts on this event (once per cool-down); the gate decides whether it becomes champion.")


def failure_automation(block_id, flows: tuple[str, ...] = FLOWS):
    """An automation that sends one notification per Failed or Crashed run of `flows`."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    trigger = EventTrigger(
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
        posture=Posture.Reactive, threshold=1)
    return Automation(name=AUTOMATION_NAME, description="Created by `flowtune notify`", trigger=trigger,
                      actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)])


def missing_run_automation(block_id, hours: float = MISSING_RUN_HOURS):
    """An automation that notifies when the nightly deployment has no Completed run for `hours` (and again
    after each further `hours` of silence)."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    trigger = EventTrigger(
        expect={"prefect.flow-run.Completed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": NIGHTLY_DEPLOYMENT},
        posture=Posture.Proactive, threshold=1, within=timedelta(hours=hours))
    where = f"{PIPELINE_FLOW}/{NIGHTLY_DEPLOYMENT}"
    return Automation(
        name=MISSING_AUTOMATION_NAME, description="Created by `flowtune notify`", trigger=trigger,
        actions=[SendNotification(
            block_document_id=block_id, subject=f"flowtune: no Completed run of {where} in {hours:g} hours",
            body=("The nightly retraining has not completed a run. Is the worker up (`flowtune services status`), "
                  "the schedule active, a run stuck in Late or Pending? See the deployment in the Prefect UI."))])


def drift_automation(block_id):
    """An automation that posts each `flowtune.drift.detected` event: the model, version and what drifted."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    from flows.ops.monitor import DRIFT_EVENT

    trigger = EventTrigger(expect={DRIFT_EVENT}, match={"prefect.resource.id": "flowtune.model.*"},
                           posture=Posture.Reactive, threshold=1)
    return Automation(name=DRIFT_AUTOMATION_NAME, description="Created by `flowtune notify`", trigger=trigger,
                      actions=[SendNotification(block_document_id=block_id, subject=DRIFT_SUBJECT, body=DRIFT_BODY)])


def install(webhook_url: str, missing_run_hours: float = MISSING_RUN_HOURS) -> list[str]:
    """Save the webhook block and (re)create the three automations (failures, missing nightly run, drift); ids.

    The URL (it usually carries a token: Slack, Teams, ntfy) is kept in the block's `secrets`, Prefect's
    secret storage: the API and the UI show it masked, and the block's plain `url` field is only the
    placeholder the server fills in when it sends.
    """
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name=BLOCK_NAME, url="{{webhook_url}}", secrets={"webhook_url": webhook_url},
                                           json_data={"subject": "{{subject}}", "text": "{{body}}"})
    block_id = block.save(BLOCK_NAME, overwrite=True)
    for name in (AUTOMATION_NAME, MISSING_AUTOMATION_NAME, DRIFT_AUTOMATION_NAME):
        try:
            Automation.read(name=name).delete()
        except ValueError:
            pass  # none yet
    return [str(failure_automation(block_id).create().id),
            str(missing_run_automation(block_id, missing_run_hours).create().id),
            str(drift_automation(block_id).create().id)]
