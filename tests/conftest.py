"""Shared fixtures.

- `free_port`: a function returning a free TCP port (its +10000 SeaweedFS gRPC twin is free too).
- `local_services`: real SeaweedFS + Prefect server on free ports in a scratch folder, started once
  per session and stopped at the end; its value is the `Settings` (credentials included) to use.
- `local_service_env`: the environment a client process needs for those services (PREFECT_API_URL...).
- `start_local_services`: a function `(workdir) -> Settings` starting another private set (the caller
  stops it with `flows.ops.services.down(settings)`), for tests that need to stop or restart services.
- `tiny_base`: a 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a base model folder.
- `reliability`: records this test's row of docs/RELIABILITY.md (a fault, what happened, numbers).
- `background_lane`: the lane whose long e2e runs started with the session (tests/lanes.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasks.settings import Settings
from tests.helpers import ROOT, discard_services, find_free_port
from tests.lanes import Lane, SharedLane, background_of, background_of_file

# Idle OpenMP threads sleep instead of spinning: the background lane's training shares the two cores
# with the tests, and spinning threads steal them from each other. Set before anything imports torch;
# subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LANE = pytest.StashKey["Lane | SharedLane"]()
_LANE_STARTED = pytest.StashKey[bool]()
LANES = "lanes"  # under the controller's basetemp: each background job's outcome, for the workers


def _under_xdist_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _lane(config: pytest.Config) -> Lane | SharedLane:
    """In an xdist worker, the controller's lane (through its outcome files); elsewhere a lane of this process."""
    if _LANE not in config.stash:
        basetemp = config._tmp_path_factory.getbasetemp()
        if _under_xdist_worker():  # a worker's basetemp is <controller's basetemp>/popen-gwN
            config.stash[_LANE] = SharedLane(basetemp.parent / LANES)
        else:
            config.stash[_LANE] = Lane(lambda name: config._tmp_path_factory.mktemp(name), publish=basetemp / LANES)
    return config.stash[_LANE]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of background runs go last, so that their runs overlap everything else (a stable sort: the order is
    otherwise kept). Under pytest-xdist (`--dist loadfile`) a worker takes their files only when nothing else is
    left, and waits there for the controller's run."""
    items.sort(key=lambda item: background_of(item) is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """One process: start the selected background runs now (an xdist worker never does: the controller does)."""
    if session.config.option.collectonly or _under_xdist_worker():
        return
    for item in session.items:
        if (background := background_of(item)) is not None:
            _lane(session.config).start(background)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """The xdist controller, when the first worker has collected: start the background runs of the selected tests
    in the controller's lane (it runs no test itself, so no worker is held while a run goes on)."""
    config = node.config
    if config.stash.get(_LANE_STARTED, False) or config.option.collectonly:
        return
    config.stash[_LANE_STARTED] = True
    for path in sorted({nodeid.split("::")[0] for nodeid in ids}):
        background = background_of_file(config.rootpath / path)
        if background is not None:
            _lane(config).start(background)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _LANE in session.config.stash:
        session.config.stash[_LANE].stop()


@pytest.fixture(scope="session")
def background_lane(pytestconfig: pytest.Config) -> Lane:
    return _lane(pytestconfig)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for each port needed: ports (and their +10000 twins) are never handed out twice."""
    return find_free_port


def private_settings(workdir: Path, **overrides) -> Settings:
    """Settings for services of our own under `workdir`, on free ports, ignoring the user's .env and
    FLOWTUNE_* / PREFECT_API_URL / PREFECT_API_AUTH_STRING variables (which could point at the user's
    own services)."""
    ports = {name: find_free_port() for name in
             ("s3_port", "seaweed_master_port", "seaweed_volume_port", "seaweed_filer_port", "prefect_port")}
    fields = {"state_dir": workdir / ".flowtune", "s3_endpoint_url": None, "prefect_api_url": None,
              "s3_access_key_id": None, "s3_secret_access_key": None, "prefect_api_auth_string": None,
              **ports, **overrides}
    return Settings(_env_file=None, **fields)


def dvc_workdir(workdir: Path) -> Path:
    """A folder that looks like the repo to `services.up`: `.dvc/config` with the `storage` remote."""
    (workdir / ".dvc").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".dvc" / "config", workdir / ".dvc" / "config")
    return workdir


def start_private_services(workdir: Path) -> Settings:
    """`services.up` run from `workdir` (it writes .env and .dvc/config.local there); the Settings."""
    from flows.ops import services

    settings = private_settings(dvc_workdir(workdir))
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        settings = services.ensure_credentials(settings)
        services.up(settings)
    except BaseException:
        services.down(settings)  # a half-started set must not outlive the session
        raise
    finally:
        os.chdir(previous)
    return settings


@pytest.fixture(scope="session")
def start_local_services() -> Callable[[Path], Settings]:
    return start_private_services


@pytest.fixture(scope="session")
def local_services(tmp_path_factory) -> Iterator[Settings]:
    """Private SeaweedFS + Prefect server for the whole session; yields their Settings."""
    settings = start_private_services(tmp_path_factory.mktemp("services"))
    yield settings
    discard_services(settings)


@pytest.fixture(scope="session")
def local_service_env(local_services: Settings) -> dict[str, str]:
    """Environment for a client process (e.g. a flow run in a subprocess) of `local_services`."""
    from flows.ops.services import service_env

    return service_env(local_services)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random BERT encoder saved like a real base model (weights + MiniLM tokenizer)."""
    from tests.helpers import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def reliability_log():
    from tests.reliability import Reliability

    log = Reliability()
    yield log
    log.save()


@pytest.fixture
def reliability(reliability_log, request):
    """`reliability(fault=..., happened=..., recovered=..., lost=..., **numbers)` records this test's row."""
    def record(**row) -> None:
        reliability_log.record(request.node.nodeid, **row)
    return record
