"""Unit tests that train a model are marked `slow` (issue #34 item 6), so `make test-fast` stays fast.

Enforced, not remembered: while a test that is not marked `slow` runs (its fixtures included, so a
module-scoped fixture that trains counts for the first test that asks for it), the training loop
(`tasks.engine.fit`) fails the test with a message saying what to do. Single optimizer steps
(`engine.train_step`, the loss and gradient tests) are not training and stay in the fast lane.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks import engine

_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running[:] = [item]
    try:
        yield
    finally:
        _running.clear()


@pytest.fixture(scope="session", autouse=True)
def training_needs_the_slow_mark() -> Iterator[None]:
    original = engine.fit

    def guarded(*args, **kwargs):
        test = _running[0] if _running else None
        if test is not None and test.get_closest_marker("slow") is None:
            pytest.fail(f"{test.nodeid} trains a model (tasks.engine.fit): mark it @pytest.mark.slow, or its "
                        "fixture's users, so that `make test-fast` stays fast (issue #34 item 6)", pytrace=False)
        return original(*args, **kwargs)

    engine.fit = guarded
    yield
    engine.fit = original
