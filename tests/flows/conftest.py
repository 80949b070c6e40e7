"""Flow tests: the real flows on a throw-away Prefect server (`prefect_test_harness`: a SQLite database
in a temporary folder, a server subprocess), started once for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Most of its start-up is Prefect's migrations of the fresh database (15-25 s on a busy 2-core
    # machine): hence once per session, and a start-up timeout above the default 30 s.
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}), \
            prefect_test_harness(server_startup_timeout=120):
        yield
