"""flowtune flows, in layers (docs/ARCHITECTURE.md; pyproject.toml's `flows-layers` contract): cli/ over
orchestration/ (the Prefect flows) over labelling/ and serving/ over ops/ (services, gc, alerts, monitoring),
with the registry, names and redaction shared by all."""
