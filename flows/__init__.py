"""flowtune flows: Prefect orchestration, gate, registration and the CLI."""
