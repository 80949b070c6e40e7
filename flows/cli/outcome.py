"""How a command that runs a flow ends its output: the same three lines for `run`, `sweep` and `label audit`."""

from __future__ import annotations

from tasks.settings import Settings


def print_outcome(command: str, state, settings: Settings) -> dict | None:
    """How the run ended, its page in the Prefect UI and, when it did not complete, why; the run's result when it
    completed, None when not."""
    print(f"\n=== flowtune {command} finished:", state.type.value)
    print(f"Prefect UI (flow run): {settings.ui_url}/runs/flow-run/{state.state_details.flow_run_id}")
    if not state.is_completed():
        print(f"Reason:                {state.message}")
        return None
    return state.result()
