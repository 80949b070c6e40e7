"""Task kinds: NER (tasks/kinds/ner/) and text classification (tasks/kinds/textclass/), behind one seam
(tasks/kinds/data.py: `DataKind`, tasks/kinds/base.py: `ModelKind`, `TaskKind`).

These functions are the only place that looks at which kind the params ask for. Each imports one module of the
chosen kind's package by name (`params.task.kind`: "ner" | "textclass", whose schema tasks/params.py loaded), so
that no stage imports a kind statically: a stage's code is its own module, the core and the files of its side of
`tasks/kinds/${task.kind}` (dvc.yaml), and a classifier-only change never reruns an NER stage. A data stage asks
for its view of the data side (ingest and augment the rows, clean the cleaning rules too, validate the contract
too), a model stage for the model side, so that editing the training loop reruns no data stage, editing the
contract no augmentation, and editing cleaning, the contract or an augmenter no training (docs/DECISIONS.md, 36
and 77).

A saved model's kind, predictor and loader are tasks/kinds/saved.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only; not tasks/kinds/base.py either, which imports torch and the engine
    from tasks.kinds.data import CleaningKind, ContractKind, DataKind
    from tasks.params import Params

# The module of a kind's package that each function below imports by name, for its `kind(params)`.
# tests/unit/test_project_consistency.py follows these imports, invisible to the AST, from the names a stage imports.
ENTRY_MODULES = {"data_kind_for": "datakind", "cleaning_kind_for": "clean", "contract_kind_for": "contract",
                 "model_kind_for": "modelkind", "kind_for": "kind"}


def data_kind_for(params: Params) -> DataKind[Any]:
    """The data side of the params' kind for ingest and augment (sources, splits, the augmenters' adapter):
    `tasks.kinds.<kind>.datakind`."""
    return _built(params, "data_kind_for")


def cleaning_kind_for(params: Params) -> CleaningKind[Any]:
    """The data side with the cleaning rules, for the clean stage: `tasks.kinds.<kind>.clean`."""
    return _built(params, "cleaning_kind_for")


def contract_kind_for(params: Params) -> ContractKind[Any]:
    """The data side with the data contract, for the validate stages: `tasks.kinds.<kind>.contract`."""
    return _built(params, "contract_kind_for")


def model_kind_for(params: Params) -> Any:
    """The model side of the params' kind (train, evaluate, distill, compress, the label audit), a
    `tasks.kinds.base.ModelKind`: `tasks.kinds.<kind>.modelkind`."""
    return _built(params, "model_kind_for")


def kind_for(params: Params) -> Any:
    """The whole kind, both sides (flows, tests, benchmarks), a `tasks.kinds.base.TaskKind`:
    `tasks.kinds.<kind>.kind`."""
    return _built(params, "kind_for")


def _built(params: Params, function: str) -> Any:
    return import_module(f"tasks.kinds.{params.task.kind}.{ENTRY_MODULES[function]}").kind(params)


def headline_of(kind: str) -> tuple[str, str]:
    """(headline score name, unit) of a kind, from its params module: without importing the kind itself,
    which imports torch."""
    module = import_module(f"tasks.kinds.{kind}.params")
    return module.HEADLINE, module.UNIT
