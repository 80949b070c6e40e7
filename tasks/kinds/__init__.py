"""Task kinds: NER (tasks/kinds/ner/) and text classification (tasks/kinds/textclass/), behind one seam
(tasks/kinds/base.py: `TaskKind`).

`kind_for(params)` is the only place that looks at which kind the params ask for. It imports the chosen
kind's package by name (`params.kind`: "ner" | "textclass", checked against `task` by tasks/params.py), so
that no stage imports a kind statically: a stage's code is its own module, the core and
`tasks/kinds/${kind}` (dvc.yaml), and a classifier-only change never reruns an NER stage (docs/DECISIONS.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing the protocols would pull torch into every stage
    from tasks.kinds.base import TaskKind
    from tasks.params import Params


def kind_for(params: Params) -> TaskKind[Any]:
    """The task kind the params ask for: `tasks.kinds.<params.kind>.task.kind(params)`."""
    return import_module(f"tasks.kinds.{params.kind}.task").kind(params)
