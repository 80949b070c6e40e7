"""S3 down while `flowtune serve` follows its alias: the serving version keeps answering, and the new one is
loaded once storage is back (the hot swap's retries, review N2).

A tiny tagger v1 is champion in a private SeaweedFS; serve polls every 0.5 s. The alias moves to v2 and
SeaweedFS is killed at once (SIGKILL), so serve's next look at the registry meets a dead endpoint; it is
started again after a few seconds of that.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from flows.registry import Registry
from tasks.settings import s3_client
from tests.faults.conftest import kill_s3, start_s3
from tests.helpers import find_free_port
from tests.integration.test_serve import TEXTS, Service, tiny_tagger

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_serve_keeps_its_version_while_storage_is_down_and_loads_the_new_one_after(private_s3, tiny_base, tmp_path,
                                                                                  reliability):
    prefix = f"fault-serve-{uuid.uuid4().hex[:8]}"
    registry = Registry(s3_client(private_s3), private_s3.registry_bucket, prefix)
    registry.set_alias("tagger", "champion", registry.publish("tagger", tiny_tagger(tiny_base, tmp_path / "v1", 1), {}))
    v2 = registry.publish("tagger", tiny_tagger(tiny_base, tmp_path / "v2", 2), {})
    service = Service(private_s3, prefix, "tagger:champion", find_free_port())
    try:
        assert service.wait_ready()["version"] == 1
        registry.set_alias("tagger", "champion", v2)
        kill_s3(private_s3)
        down_since = time.monotonic()
        answers = []
        while time.monotonic() - down_since < 5:  # several polls against a dead endpoint
            reply = httpx.post(f"{service.url}/v1/predict", json={"texts": TEXTS}, timeout=30)
            ready = httpx.get(f"{service.url}/readyz").status_code
            answers.append((reply.status_code, reply.json().get("version"), ready))
            time.sleep(0.2)
        restarted = time.monotonic()
        start_s3(private_s3)
        deadline = time.monotonic() + 120
        while httpx.get(f"{service.url}/readyz").json()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        swapped_after_s = time.monotonic() - restarted
    finally:
        service.stop()
    versions_while_down = {version for status, version, ready in answers if status == 200}
    assert {(status, ready) for status, _, ready in answers} == {(200, 200)}, answers[:5]
    assert versions_while_down <= {1, 2} and 1 in versions_while_down  # v1 served on (v2 only if it got through)
    assert swapped_after_s < 120, service.output[-3000:]
    assert "still serving tagger v1" in service.output
    reliability(fault="S3 (SeaweedFS) killed with SIGKILL just after the champion alias moved, while serve polls",
                happened="every request during the outage answered 200 by the serving version, /readyz 200; "
                         "serve logged the failed look-ups and kept polling; after `services up` it loaded v2",
                recovered=True, lost="nothing (no failed request)", requests_during_outage=len(answers),
                seconds_to_new_version_after_restart=round(swapped_after_s, 1))
