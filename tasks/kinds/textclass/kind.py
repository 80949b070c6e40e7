"""The whole text-classification kind (tasks/kinds/base.py: `TaskKind`), built by `tasks.kinds.kind_for`: every stage's
view of it in one object (the data side, tasks/kinds/textclass/datakind.py, with its cleaning rules and its
contract, clean.py and contract.py, and the model side, modelkind.py), for the code that is no DVC stage
(flows, tests, benchmarks). A stage asks for its own view only, so that its dvc.yaml deps hold only the files
that view runs (docs/DECISIONS.md, 77).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.kinds.textclass.clean import TextClassCleaning
from tasks.kinds.textclass.contract import TextClassContract
from tasks.kinds.textclass.modelkind import TextClassModel
from tasks.kinds.textclass.params import TextclassParams


@dataclass(frozen=True)
class TextClass(TextClassCleaning, TextClassContract, TextClassModel):
    """Texts with one class each, or (`multi_label`) any set of classes: every stage's view of text
    classification."""


def kind(params: TextclassParams) -> TextClass:
    return TextClass(list(params.task.labels), params.task.multi_label, params.train.class_weight)
