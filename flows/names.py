"""Names that the flows, the services and prefect.yaml must agree on, in one place.

prefect.yaml repeats the pool and flow names (YAML cannot import them); tests/unit/test_deployment_config.py
checks its pools and flows against the code.
"""

from __future__ import annotations

# Work pools
WORK_POOL = "flowtune-local"  # the local process worker's pool (`flowtune services up` starts its worker)
TRAIN_POOL = "flowtune-gpu"  # the train-stage deployment's pool (prefect.yaml); its workers run elsewhere

# The global concurrency limit the train stage holds: one slot per GPU (flows/orchestration/steps.py,
# flows/ops/services/)
ACCELERATOR_LIMIT = "gpu"

# Flow names (`prefect deployment run <flow>/<deployment>`; notifications filter on them)
PIPELINE_FLOW = "flowtune-pipeline"
DATA_REFRESH_FLOW = "flowtune-data-refresh"
EVALUATE_CHAMPION_FLOW = "flowtune-evaluate-champion"
TRAIN_STAGE_FLOW = "flowtune-train-stage"
GC_FLOW = "flowtune-gc"
LABEL_SELECT_FLOW = "flowtune-select-for-labelling"  # flows/orchestration/label.py: `flowtune label select` as a flow
SWEEP_FLOW = "flowtune-sweep"  # flows/orchestration/sweep.py: the search, run by `flowtune sweep`
SWEEP_TRIAL_FLOW = "flowtune-sweep-trial"  # one trial, a run of the deployment below on the work pool
SWEEP_TRIAL_DEPLOYMENT = f"{SWEEP_TRIAL_FLOW}/sweep-trial"
# flows/orchestration/audit.py: likely label errors in train, run by `flowtune label audit`
LABEL_AUDIT_FLOW = "flowtune-label-audit"
MONITOR_FLOW = "flowtune-monitor"  # flows/ops/monitor.py: captured traffic against each version's reference (drift)

# Events (flows/batches.py sends; an automation of `flowtune deploy` starts training on them). Their resource is
# the registered model the data trains: `flowtune.model.<registry.model_name>`.
DATA_CHANGED_EVENT = "flowtune.data.changed"  # a batch of labelled data was added to the source folder


def model_resource_id(model_name: str) -> str:
    """The Prefect resource id of a registered model (params registry.model_name) in flowtune's events."""
    return f"flowtune.model.{model_name}"
