"""The whole NER kind (tasks/kinds/base.py: `TaskKind`), built by `tasks.kinds.kind_for`: every stage's
view of it in one object (the data side, tasks/kinds/ner/datakind.py, with its cleaning rules and its
contract, clean.py and contract.py, and the model side, modelkind.py), for the code that is no DVC stage
(flows, tests, benchmarks). A stage asks for its own view only, so that its dvc.yaml deps hold only the files
that view runs (docs/DECISIONS.md, 77).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.kinds.ner.clean import NerCleaning
from tasks.kinds.ner.contract import NerContract
from tasks.kinds.ner.modelkind import NerModel
from tasks.kinds.ner.params import NerParams


@dataclass(frozen=True)
class Ner(NerCleaning, NerContract, NerModel):
    """Sentences of tokens with IOB2 tags over `entity_types`: every stage's view of NER."""


def kind(params: NerParams) -> Ner:
    return Ner(list(params.task.labels))
