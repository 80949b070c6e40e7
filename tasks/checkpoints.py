"""Resumable training state: save every N steps, resume after a crash or a SIGKILL, clear when done.

A checkpoint is one file, `checkpoint.pt`, written to a temporary name, flushed to disk (fsync) and
renamed into place, so a kill, a power cut or a full disk during the save leaves the previous checkpoint
intact and no temporary file behind. A checkpoint that cannot be read back (truncated, garbled) is
reported and ignored: the stage starts fresh rather than failing on it (review L2).

It holds the model, optimizer, scheduler and loss-scaler states, the loop position (epoch, step within
it), the curve so far, the best epoch's weights, and the RNG states of every process, which is what
makes a resumed run follow the same path as an uninterrupted one.

A checkpoint is only resumed when its fingerprint (training params, label list and the bytes of the
train and dev files) matches the current run; otherwise it belongs to other inputs and is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from tasks.io import empty_folder

CHECKPOINT_FILE = "checkpoint.pt"

# Params that change neither the result nor the path to it: a run may resume with other values.
RESUME_NEUTRAL_PARAMS = {"checkpoint_every_steps", "log_every_steps", "num_threads"}


def fingerprint(params, labels: list[str], files: list[Path]) -> str:
    """Identity of a training run's inputs: a checkpoint resumes only a run with the same one."""
    digest = hashlib.sha256()
    settings = params.model_dump(exclude=RESUME_NEUTRAL_PARAMS)
    digest.update(json.dumps({"params": settings, "labels": labels}, sort_keys=True).encode())
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states as plain Python values: they travel
    through torch.distributed's object gathering and load with torch.load(weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save(folder: Path, payload: dict) -> None:
    """Write, fsync, rename: a crash or an error mid-save (a full disk) keeps the previous checkpoint whole,
    and the temporary file is removed before the error goes on."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{CHECKPOINT_FILE}.tmp"
    try:
        with open(staging, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes on disk before the rename makes them the checkpoint
        os.replace(staging, folder / CHECKPOINT_FILE)
    except BaseException:
        staging.unlink(missing_ok=True)  # a half-written file only takes the space the disk lacks
        raise
    sync_folder(folder)


def sync_folder(folder: Path) -> None:
    """fsync the folder, so that the rename itself survives a power cut (where the platform allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # no directory handles (Windows): the rename is as durable as the platform makes it
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load(folder: Path | None, expected_fingerprint: str) -> dict | None:
    """The saved checkpoint if there is one for these inputs, else None: a stale one is ignored, and a
    corrupt one too, with a warning (a resume is an optimisation; failing the stage on it helps no one)."""
    path = None if folder is None else folder / CHECKPOINT_FILE
    if path is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a bad pickle, garbage: each raises its own type
        print(f"warning: checkpoint {path} is unreadable ({type(exc).__name__}: {first_line(exc)}); "
              "training starts from the beginning", file=sys.stderr, flush=True)
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != expected_fingerprint:
        return None
    return payload


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def clear(folder: Path | None) -> None:
    """Remove the saved state once training has finished (the folder itself stays: it is a DVC output)."""
    empty_folder(folder)
