"""Checkpoint saves that fail part-way and checkpoints that come back damaged (review L2).

A save that fails (a full disk) must leave the previous checkpoint loadable and no temporary file; a
truncated checkpoint must not crash the resume: the stage starts from the beginning, with a warning.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from tasks import checkpoints

IDENTITY = "inputs-1"


def payload(step: int) -> dict:
    return {"fingerprint": IDENTITY, "progress": {"global_step": step}, "model": {"w": torch.full((64, 64), step)}}


def saved_step(folder: Path) -> int:
    loaded = checkpoints.load(folder, IDENTITY)
    assert loaded is not None
    return loaded["progress"]["global_step"]


def test_a_save_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = checkpoints.os.fsync
    monkeypatch.setattr(checkpoints.os, "fsync", lambda fd: synced.append(Path(f"/proc/self/fd/{fd}").resolve().name)
                        or real_fsync(fd))
    checkpoints.save(tmp_path, payload(5))
    # the staged file, then the folder (which makes the rename durable)
    assert synced == [f".{checkpoints.CHECKPOINT_FILE}.tmp", tmp_path.name]
    assert saved_step(tmp_path) == 5 and sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.CHECKPOINT_FILE]


def test_a_disk_full_mid_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                                          reliability):
    checkpoints.save(tmp_path, payload(5))

    def half_then_disk_full(obj, handle):
        handle.write(b"PK\x03\x04" + b"\0" * 4096)  # part of a zip, as a save cut short writes
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", half_then_disk_full)
    with pytest.raises(OSError) as failed:
        checkpoints.save(tmp_path, payload(10))
    assert failed.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.CHECKPOINT_FILE]
    monkeypatch.undo()
    assert saved_step(tmp_path) == 5  # a resume picks up the last whole checkpoint
    reliability(fault="disk full (ENOSPC) in the middle of a training checkpoint's save",
                happened="the save raised the OSError (the stage fails naming it); its temporary file was removed",
                recovered=True, lost="only the steps after the previous checkpoint, which stayed whole and resumable")


def test_a_truncated_checkpoint_is_ignored_with_a_warning(tmp_path, capsys, reliability):
    checkpoints.save(tmp_path, payload(5))
    path = tmp_path / checkpoints.CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    assert checkpoints.load(tmp_path, IDENTITY) is None
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: checkpoint {path} is unreadable (") and len(warning.splitlines()) == 1
    assert warning.endswith("training starts from the beginning")
    checkpoints.save(tmp_path, payload(7))  # the fresh run's first save replaces it
    assert saved_step(tmp_path) == 7
    reliability(fault="a truncated training checkpoint found on resume",
                happened="one warning line naming the file; training started from the beginning, and its first "
                         "save replaced the file",
                recovered=True, lost="the training the checkpoint held (re-trained)")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_an_empty_or_garbled_checkpoint_is_ignored(tmp_path, content, capsys):
    (tmp_path / checkpoints.CHECKPOINT_FILE).write_bytes(content)
    assert checkpoints.load(tmp_path, IDENTITY) is None
    assert "is unreadable" in capsys.readouterr().err
