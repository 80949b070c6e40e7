"""The fault-injection suite: real faults (kill -9, a stopped S3 or Prefect server, a full disk) on real
services, each test asserting that nothing is lost and nothing half-visible.

Each test records one row with the `reliability` fixture (tests/reliability.py): the fault, what
happened, whether the system recovered and whether anything was lost, plus the numbers it measured.
Here: a private SeaweedFS that tests may kill, and in-process flows on the session's Prefect server.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def start_s3(settings):
    """`services.up` from the private set's folder (it wires `.dvc/config.local` of the current
    directory: never the repository's own)."""
    import os

    from flows.ops import services

    previous = Path.cwd()
    os.chdir(settings.state_dir.parent)
    try:
        settings = services.ensure_credentials(settings)
        services.up(settings)
    finally:
        os.chdir(previous)
    return settings


def kill_s3(settings) -> None:
    """kill -9 the private SeaweedFS (its whole process group), as a crash or an OOM kill would."""
    from tests.helpers import kill_service

    kill_service(settings, "seaweedfs")


@pytest.fixture(scope="session")
def private_s3(tmp_path_factory, local_services):
    """A SeaweedFS of the fault suite's own (safe to kill: every test that kills it starts it again), on
    free ports; Prefect stays the session's server. Yields its Settings; stopped at the end of the session."""
    from tests.conftest import dvc_workdir, private_settings
    from tests.helpers import discard_services

    workdir = dvc_workdir(tmp_path_factory.mktemp("private-s3"))
    settings = start_s3(private_settings(workdir, prefect_api_url=local_services.api_url, start_worker=False,
                                         prefect_api_auth_string=local_services.prefect_api_auth_string))
    try:
        yield settings
    finally:
        discard_services(settings)


@pytest.fixture
def prefect_client_of(local_services):
    """In-process flows and tasks talk to the session's Prefect server (not an ephemeral one)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: local_services.api_url,
                                     PREFECT_API_AUTH_STRING: local_services.prefect_api_auth_string}):
        yield local_services
