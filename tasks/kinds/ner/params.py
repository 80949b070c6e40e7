"""The NER keys of a params file: the common sections (tasks/params.py) plus what only NER reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.params import (
    COMMON_CHECKS,
    COMMON_HINTS,
    AugmentParams,
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

# What the evaluation reports (EvalReport.headline.name and .unit); tasks.kinds.headline_of reads them.
HEADLINE = "strict entity F1"
UNIT = "sentence"

CHECKS = COMMON_CHECKS + ("length_match", "iob2_valid", "token_not_blank", "tag_in_label_set", "entity_distribution",
                          "train_has_entities")
HINTS = {
    **COMMON_HINTS,
    "length_match": "each record needs one tag per token: fix the records of `ingest.source` (no params key "
                    "accepts it)",
    "iob2_valid": "an IOB1 (BIOES) source needs `ingest.tag_scheme: iob1` (`bioes`); else add iob2_valid to "
                  "`validate.soft.raw` and let `clean.bio_repair` repair or drop those sentences",
    "token_not_blank": "add token_not_blank to `validate.soft.raw`: cleaning drops blank tokens",
    "tag_in_label_set": "add the missing entity types to `task.labels` ([]: those of the train split), or set "
                        "`ingest.tag_scheme` to the source's scheme",
    "entity_distribution": "widen `validate.entity_share_ratio`, or set `validate.reference_profile` to your "
                           "data's profile (null: not checked)",
    "train_has_entities": "the train split has no entity: check `ingest.source` and `ingest.tag_scheme` (tags "
                          "read from the wrong column or scheme)",
}


class NerTaskParams(TaskParams):
    kind: Literal["ner"] = Field(description="`ner`: token classification")


class NerIngestParams(IngestParams):
    tag_scheme: Literal["iob1", "iob2", "bioes"] = Field(description=(
        "the source's tag scheme: `iob2` (B- starts every entity), `iob1` (B- only between adjacent entities of one "
        "type) or `bioes` (also BILOU); converted to IOB2 on import"))


class NerValidateParams(ValidateParams):
    reference_profile: str | None = Field(description=(
        "a committed entity-type profile: each type's share of mentions must stay within entity_share_ratio x its "
        "share there (a broken import fails); null = not checked"))
    entity_share_ratio: tuple[float, float] = Field(description=(
        "[low, high] factors on each entity type's share against reference_profile"))

    @field_validator("soft")
    @classmethod
    def _known_checks(cls, soft: dict[str, list[str]]) -> dict[str, list[str]]:
        return unknown_checks(soft, CHECKS)


class NerCleanParams(CleanParams):
    bio_repair: Literal["repair", "drop"] = Field(description=(
        "an I-X that does not continue an X entity: `repair` makes it B-X, `drop` drops the sentence"))


class NameSwapParams(Section):
    """Name swap (NER): mentions of these types are replaced by other train mentions of the same type, so the model
    learns a name from its context."""

    types: list[str] = Field(min_length=1, description=(
        "entity types whose mentions are replaced by other train mentions"))
    swap_prob: float = Field(gt=0, le=1, description="chance that each such mention is replaced")
    copies: int = Field(ge=1, description="new sentences wanted per train sentence with such a mention")
    max_attempts: int = Field(ge=1, description="tries per copy to get a new, changed sentence")


class NerAugmentParams(AugmentParams):
    methods: list[Literal["synonym", "name_swap", "backtranslation"]] = Field(description=(
        "the augmenters applied, each to the cleaned train sentences: `synonym`, `name_swap`, `backtranslation`"))
    name_swap: NameSwapParams  # tasks/augmenters/name_swap.py


class NerTrainParams(TrainParams):
    label_all_pieces: bool = Field(description=(
        "false: a word's label on its first sub-word piece only; true: later pieces get I-X"))


class ChecklistParams(Section):
    """Behavioural checks (CheckList style), reported as pass rates and held to gate.min_behaviour."""

    name_type: str = Field(description=(
        "name invariance: swapping one name of this entity type for another must not change any tag"))
    max_cases: int = Field(ge=1, description="most name-swap cases tested")
    seed: int = Field(description="seed of the name-swap cases")
    mft_file: str = Field(description="minimum-functionality sentences (JSONL), each to be tagged exactly")


class NerEvaluateParams(EvaluateParams):
    checklist: ChecklistParams


class NerParams(Params):
    task: NerTaskParams
    ingest: NerIngestParams
    validate_: NerValidateParams = Field(alias="validate")
    clean: NerCleanParams
    augment: NerAugmentParams
    train: NerTrainParams
    evaluate: NerEvaluateParams


SCHEMA = NerParams
