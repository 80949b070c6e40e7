"""Tests against real local services (SeaweedFS, Prefect server, DVC remote)."""
