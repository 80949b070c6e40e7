"""The NER keys of a params file: the common sections (tasks/params.py) plus what only NER reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.params import (
    COMMON_CHECKS,
    CleanParams,
    EvaluateParams,
    IngestParams,
    Params,
    Section,
    TaskParams,
    TrainParams,
    ValidateParams,
    unknown_checks,
)

CHECKS = COMMON_CHECKS + ("length_match", "iob2_valid", "token_not_blank", "tag_in_label_set", "entity_distribution",
                          "train_has_entities")


class NerTaskParams(TaskParams):
    kind: Literal["ner"]


class NerIngestParams(IngestParams):
    tag_scheme: Literal["iob1", "iob2", "bioes"]  # the source's; tags are converted to IOB2 on import


class NerValidateParams(ValidateParams):
    reference_profile: str | None  # None: no entity-distribution check
    entity_share_ratio: tuple[float, float]

    @field_validator("soft")
    @classmethod
    def _known_checks(cls, soft: dict[str, list[str]]) -> dict[str, list[str]]:
        return unknown_checks(soft, CHECKS)


class NerCleanParams(CleanParams):
    bio_repair: Literal["repair", "drop"]  # an I-X that opens an entity: make it B-X, or drop the sentence


class NerTrainParams(TrainParams):
    label_all_pieces: bool  # false: a word's label on its first piece only; true: later pieces get I-X


class ChecklistParams(Section):
    name_type: str
    max_cases: int = Field(ge=1)
    seed: int
    mft_file: str


class NerEvaluateParams(EvaluateParams):
    checklist: ChecklistParams


class NerParams(Params):
    task: NerTaskParams
    ingest: NerIngestParams
    validate_: NerValidateParams = Field(alias="validate")
    clean: NerCleanParams
    train: NerTrainParams
    evaluate: NerEvaluateParams


SCHEMA = NerParams
