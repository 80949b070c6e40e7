"""Shared fixtures. `local_services`: real SeaweedFS + Prefect server on free ports, once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.settings import Settings
from tests.helpers import port_settings


@pytest.fixture(scope="session")
def local_services(tmp_path_factory) -> Iterator[Settings]:
    """Start private services in a scratch folder; yield their Settings; stop them at the end."""
    from flows import services

    workdir = tmp_path_factory.mktemp("services")
    (workdir / ".dvc").mkdir()
    ports = {k.removeprefix("FLOWTUNE_").lower(): int(v) for k, v in port_settings().items()}
    settings = Settings(_env_file=None, state_dir=workdir / ".flowtune", prefect_api_url=None, **ports)
    previous = Path.cwd()
    os.chdir(workdir)  # services.up writes .env and .dvc/config.local into the current folder
    try:
        services.up(settings)
        settings = services.ensure_credentials(settings, workdir / ".env")
    finally:
        os.chdir(previous)
    yield settings
    services.down(settings)
