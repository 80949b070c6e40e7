"""The text-classification keys of a params file: the common sections (tasks/params.py) plus what only
text classification reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.params import (
    COMMON_CHECKS,
    COMMON_HINTS,
    IngestParams,
    Params,
    TaskParams,
    TrainParams,
    ValidateParams,
    unknown_checks,
)

# What the evaluation reports (EvalReport.headline.name and .unit); tasks.kinds.headline_of reads them.
HEADLINE = "macro-F1"
UNIT = "text"

CHECKS = COMMON_CHECKS + ("text_not_blank", "label_in_set", "class_balance")
HINTS = {
    **COMMON_HINTS,
    "text_not_blank": "add text_not_blank to `validate.soft.raw`: cleaning drops texts left empty",
    "label_in_set": "add the missing classes to `task.labels` ([]: those of the train split), or check "
                    "`ingest.label_column`",
    "class_balance": "widen `validate.class_share`, or check `ingest.label_column` (and `task.multi_label`)",
}


class TextclassTaskParams(TaskParams):
    kind: Literal["textclass"] = Field(description="`textclass`: a label (or a label set) per text")
    multi_label: bool = Field(description=(
        "true: each text has any number of labels (sigmoid + binary cross-entropy); false: exactly one (softmax)"))


class TextclassIngestParams(IngestParams):
    text_column: str = Field(min_length=1, description="the CSV header / JSONL key of each example's text")
    label_column: str = Field(min_length=1, description=(
        "the CSV header / JSONL key of each example's label (a JSONL list for multi_label)"))
    label_separator: str = Field(min_length=1, description=(
        "multi_label: the separator between the labels of a CSV cell"))


class TextclassValidateParams(ValidateParams):
    class_share: tuple[float, float] = Field(description=(
        "[low, high] bounds on each class's share of a split's examples"))

    @field_validator("soft")
    @classmethod
    def _known_checks(cls, soft: dict[str, list[str]]) -> dict[str, list[str]]:
        return unknown_checks(soft, CHECKS)


class TextclassTrainParams(TrainParams):
    class_weight: Literal["none", "balanced"] = Field(description=(
        "`balanced`: each class's loss weighs n / (classes x its train count), so a rare class counts as much as a "
        "common one; `none`: every text alike"))


class TextclassParams(Params):
    task: TextclassTaskParams
    ingest: TextclassIngestParams
    validate_: TextclassValidateParams = Field(alias="validate")
    train: TextclassTrainParams


SCHEMA = TextclassParams
