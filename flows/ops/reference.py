"""The reference profile a version is registered with (reference.json): the drift monitor's description of the
model's own test split, made by the evaluate stage (tasks/reference.py), so that the monitor compares traffic
with the version that answered it, and a swap of the champion changes the reference too.

Registration writes it into the staged model folder before the version is published, so it is uploaded and
verified with the weights and becomes visible with the manifest, never alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.params import Params
from tasks.reference import read_reference

REFERENCE_FILE = "reference.json"
logger = logging.getLogger("flowtune.reference")


def reference_or_none(params: Params) -> dict | None:
    """The evaluate stage's profile of the candidate, or None with a warning naming the reason: a model that
    passed the gate is registered even when its reference is missing (an older checkout's outputs) or could not
    be made; the monitor then says that this version has no reference, instead of the model never being
    published."""
    path = Path(params.paths.drift_reference)
    try:
        return read_reference(path)
    except (OSError, ValueError) as exc:
        logger.warning("%s not stored (%s): the version is registered without it, and the drift monitor will skip "
                       "its traffic", REFERENCE_FILE, exc)
        return None
