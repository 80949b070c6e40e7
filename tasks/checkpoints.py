"""Resumable training state: save every N steps, resume after a crash or a SIGKILL, clear when done.

A checkpoint is one file, `checkpoint.pt`, written to a temporary name and renamed into place, so a
kill during the write leaves the previous checkpoint intact. It holds the model, optimizer, scheduler
and loss-scaler states, the loop position (epoch, step within it), the curve so far, the best epoch's
weights, and the RNG states of every process, which is what makes a resumed run follow the same path
as an uninterrupted one.

A checkpoint is only resumed when its fingerprint (training params, label list and the bytes of the
train and dev files) matches the current run; otherwise it belongs to other inputs and is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
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
    """Write the checkpoint atomically: a crash mid-write keeps the previous one."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{CHECKPOINT_FILE}.tmp"
    torch.save(payload, staging)
    os.replace(staging, folder / CHECKPOINT_FILE)


def load(folder: Path | None, expected_fingerprint: str) -> dict | None:
    """The saved checkpoint if there is one for these inputs, else None (a stale one is ignored)."""
    if folder is None or not (folder / CHECKPOINT_FILE).is_file():
        return None
    payload = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if payload.get("fingerprint") != expected_fingerprint:
        return None
    return payload


def clear(folder: Path | None) -> None:
    """Remove the saved state once training has finished (the folder itself stays: it is a DVC output)."""
    empty_folder(folder)
