"""A run refuses to start on a nearly full disk, in one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.ops.diskspace import DiskFullError, check_free_disk, free_bytes
from tasks.settings import Settings


def test_a_run_refuses_to_start_below_the_free_disk_threshold(tmp_path: Path):
    settings = Settings(_env_file=None, state_dir=tmp_path / "state", min_free_gb=1e9)  # more than any disk
    with pytest.raises(DiskFullError) as refused:
        check_free_disk(settings, tmp_path)
    message = str(refused.value)
    assert "\n" not in message and "GB free" in message and "flowtune gc" in message


def test_enough_free_disk_or_a_zero_threshold_lets_it_start(tmp_path: Path):
    check_free_disk(Settings(_env_file=None, state_dir=tmp_path / "not-yet", min_free_gb=0.001), tmp_path)
    check_free_disk(Settings(_env_file=None, state_dir=tmp_path, min_free_gb=0), tmp_path)
    # a path that does not exist yet is measured on the disk of its nearest existing parent (other processes
    # write meanwhile, so the two readings may differ by a little)
    assert abs(free_bytes(tmp_path / "missing" / "deeper") - free_bytes(tmp_path)) < 256 * 2**20
