"""The Prefect flows and what they are made of: the training pipeline and its steps (one task per DVC stage),
the evaluation gate and the champion, registration's lineage and reference profile, sweeps, the label-audit
and labelling-selection flows, remote training, and the workspace a run works in."""
