"""Task kinds: NER (tasks/kinds/ner/) and text classification (tasks/kinds/textclass/), behind one seam
(tasks/kinds/base.py: `TaskKind`).

`kind_for(params)` is the only place that looks at which kind the params ask for. It imports the chosen
kind's package by name (`params.task.kind`: "ner" | "textclass", whose schema tasks/params.py loaded), so
that no stage imports a kind statically: a stage's code is its own module, the core and
`tasks/kinds/${task.kind}` (dvc.yaml), and a classifier-only change never reruns an NER stage (docs/DECISIONS.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing the protocols would pull torch into every stage
    from tasks.kinds.base import TaskKind
    from tasks.params import Params


def kind_for(params: Params) -> TaskKind[Any]:
    """The task kind the params ask for: `tasks.kinds.<params.task.kind>.task.kind(params)`."""
    return import_module(f"tasks.kinds.{params.task.kind}.task").kind(params)


def headline_of(kind: str) -> tuple[str, str]:
    """(headline score name, unit) of a kind, from its params module: without importing the kind itself,
    which imports torch."""
    module = import_module(f"tasks.kinds.{kind}.params")
    return module.HEADLINE, module.UNIT
