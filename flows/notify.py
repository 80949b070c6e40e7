"""`flowtune notify`: tell a webhook when a flowtune flow run fails or crashes (a Prefect automation).

It saves a Custom Webhook notification block and an automation that fires on every `Failed` or
`Crashed` flow run of the flowtune flows, sending the run's name, state message and UI link. Running it
again replaces both (same names). Delivery is done by the Prefect server's automation services, so it
works for scheduled runs with nobody watching.
"""

from __future__ import annotations

from flows.names import DATA_REFRESH_FLOW, EVALUATE_CHAMPION_FLOW, PIPELINE_FLOW

FLOWS = (PIPELINE_FLOW, DATA_REFRESH_FLOW, EVALUATE_CHAMPION_FLOW)
BLOCK_NAME = "flowtune-failures"
AUTOMATION_NAME = "flowtune: flow run failed"
SUBJECT = "flowtune run {{ flow_run.name }} ({{ flow.name }}) is {{ flow_run.state.name }}"
BODY = "{{ flow_run.state.message }}\nFlow run: {{ flow_run|ui_url }}"


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


def install(webhook_url: str) -> str:
    """Save the webhook block and (re)create the automation; the automation's id.

    The URL (it usually carries a token: Slack, Teams, ntfy) is kept in the block's `secrets`, Prefect's
    secret storage: the API and the UI show it masked, and the block's plain `url` field is only the
    placeholder the server fills in when it sends.
    """
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name=BLOCK_NAME, url="{{webhook_url}}", secrets={"webhook_url": webhook_url},
                                           json_data={"subject": "{{subject}}", "text": "{{body}}"})
    block_id = block.save(BLOCK_NAME, overwrite=True)
    try:
        Automation.read(name=AUTOMATION_NAME).delete()
    except ValueError:
        pass  # none yet
    return str(failure_automation(block_id).create().id)
