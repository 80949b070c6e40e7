"""Disk full in the middle of a stage's write: one line naming the file, nothing half-written.

The clean stage's output folder is a small tmpfs: the train split fits, the dev split does not, so the
disk fills in the middle of writing dev.jsonl. The user must read one line (the stage, the file and
"No space left on device"), and the folder must hold only whole files: no half of dev.jsonl at its
final path and no temporary file left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.io import write_jsonl
from tasks.kinds.ner.records import NerRecord, load_jsonl
from tests.helpers import ROOT, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DISK_KB = 512  # the tmpfs: train (~150 KB) fits, dev (~1 MB) does not


def records(count: int, split: str) -> list[NerRecord]:
    """Distinct sentences (cleaning keeps every one) of about 100 bytes each as JSON lines."""
    tags = ("B-person", "O", "O", "B-geo-loc", "O")
    return [NerRecord(f"{split}:{i}", ("john", "went", "to", "paris", f"w{i}"), tags) for i in range(count)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A DISK_KB tmpfs at tmp_path/disk, unmounted at the end whatever happened."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_KB}k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr}"
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def stage_folder(root: Path, disk: Path) -> Path:
    """The repo's params.yaml with raw data here and the clean output on the small disk."""
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"].update(raw=str(root / "raw"), clean=str(disk / "clean"),
                           clean_report=str(root / "reports" / "clean.json"))
    params["clean"]["decontaminate_train"] = False  # the synthetic splits share sentences; train must stay whole
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for split, count in (("train", 1500), ("dev", 10000), ("test", 100)):
        write_jsonl(root / "raw" / f"{split}.jsonl", records(count, split))
    return root


def run_clean(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks.clean", "--params", "params.yaml"], cwd=folder,
                          env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)


def test_disk_full_mid_write_gives_one_line_and_no_partial_file(tmp_path, small_disk, reliability) -> None:
    folder = stage_folder(tmp_path / "stage", small_disk)
    started = time.monotonic()
    result = run_clean(folder)
    seconds = time.monotonic() - started

    lines = result.stderr.strip().splitlines()
    clean = small_disk / "clean"
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("clean: error: ") and "No space left on device" in lines[-1], lines[-1]
    assert str(clean / "dev.jsonl") in lines[-1]
    # Only whole files are visible: train complete, dev and test absent, no temporary file left.
    assert sorted(p.name for p in clean.iterdir()) == ["train.jsonl"]
    assert load_jsonl(clean / "train.jsonl") == load_jsonl(folder / "raw" / "train.jsonl")
    assert not (folder / "reports" / "clean.json").exists()
    used_kb = int(subprocess.run(["df", "--output=used", "-k", str(small_disk)], capture_output=True, text=True,
                                 check=True).stdout.split()[-1])
    assert used_kb < DISK_KB // 2, f"{used_kb} KB still used: a temporary file was not freed"

    # Space freed (the tmpfs grown), the same command completes with every split whole.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    rerun = run_clean(folder)
    assert rerun.returncode == 0, rerun.stderr
    for split in ("train", "dev", "test"):
        assert load_jsonl(clean / f"{split}.jsonl") == load_jsonl(folder / "raw" / f"{split}.jsonl")

    reliability(fault=f"disk full ({DISK_KB} KB tmpfs) while the clean stage writes dev.jsonl",
                happened=f"exit 1, one line: {lines[-1].replace(str(small_disk), '<disk>')}",
                recovered=True,
                lost="nothing (train.jsonl whole, no partial dev.jsonl, no temp file; the re-run after freeing "
                     "space wrote every split)",
                seconds_to_fail=round(seconds, 2), disk_kb=DISK_KB, used_kb_after=used_kb,
                stderr_lines=len(lines))
