"""The evaluation report (eval.json) of any task kind, typed: what the gate, the model card, the Prefect
reports and `flowtune registry show` read.

A report holds a headline score (its name and value, with precision and recall), the unit counted and
how many were scored, per-group scores (entity types, classes: precision, recall, F1, support), optional
behavioural pass rates and calibration, and the rest of the evaluation (latency, size on disk, a
confusion table, scores by slice, and `details`: the kind's other scores, e.g. lenient F1 or accuracy).
Nothing here knows a task kind: the kind that evaluates fills in the names (tasks/kinds/*/evaluate.py);
the measurements every kind takes (latency, size on disk, the confusion plot's rows) are here too.

eval.json keeps `f1` as the headline score (DVC metrics and the README read it), with `precision` and
`recall` beside it; `details` sit at the top level too, under the keys they always had. `read` also
accepts the layout written before this module (registered versions hold it): `_from_legacy`.

`python -m tasks.evaluate --model-dir` writes `{"incomparable": reason}` instead of a report when the
model cannot label the test data (another label set): `Incomparable`, read by `read_outcome`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    model_serializer,
    model_validator,
)

from tasks.io import atomic_write_text, write_json


class _Part(BaseModel):
    # Keys a newer writer adds are kept, not dropped: a report read and written again loses nothing.
    model_config = ConfigDict(extra="allow", frozen=True)


class Headline(_Part):
    """The score that ranks models: `f1`, `precision` and `recall` in eval.json, `headline` its name."""

    name: str  # e.g. "strict entity F1", "macro-F1"
    value: float
    precision: float
    recall: float


class GroupScore(_Part):
    """One entity type or class; support = its gold cases in the test split."""

    precision: float
    recall: float
    f1: float
    support: int


class CheckResult(_Part):
    """A behavioural check's pass rate (None: no cases in this test set); extras such as `failed_ids` stay."""

    cases: int
    passed: int
    pass_rate: float | None


class Behaviour(_Part):
    """Behavioural checks (tasks/kinds/ner/evaluate.py); a check that is None was not measured."""

    name_invariance: CheckResult | None = None
    minimum_functionality: CheckResult | None = None

    def checks(self) -> dict[str, CheckResult]:
        """The measured checks by name."""
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}

    @model_serializer(mode="wrap")
    def _measured_only(self, handler) -> dict:
        return {name: value for name, value in handler(self).items() if value is not None}


class Calibration(_Part):
    """Expected calibration error of the predicted probabilities (0 = they are the chance of being right)."""

    ece: float
    bins: int = 10


class Latency(_Part):
    """Milliseconds per row at batch 1 (after a warm-up call) and the throughput at the evaluation's batch size."""

    sentences: int | None = None  # rows timed at batch 1 (the key predates texts)
    p50_ms: float | None = None
    p95_ms: float | None = None
    batch_size: int | None = None
    device: str | None = None
    batch_sentences_per_second: float | None = None


class Incomparable(BaseModel):
    """The model cannot label this test data (the data holds a tag or class it does not know), so it has no
    scores on it: a champion trained on another label set is incomparable, not worse."""

    model_config = ConfigDict(frozen=True)

    incomparable: str  # why, naming the row and the label

    def write(self, path: Path) -> None:
        write_json(Path(path), self.model_dump())


# eval.json keys of the report's own fields; every other top-level key is a detail.
_HEADLINE_KEYS = ("f1", "precision", "recall")
_FIELD_KEYS = frozenset({"task", "title", "predicts", "headline", "unit", "count", "group", "groups", "behaviour",
                         "calibration", "latency", "model_size_mb", "confusion", "slices", *_HEADLINE_KEYS})


class EvalReport(BaseModel):
    """An evaluation on the test split, whatever the task kind."""

    # Built from eval.json, unknown keys become details; built from the fields, an unknown one is an error.
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str  # params' `task`, e.g. "token-classification"; shown, never branched on
    title: str  # the task in words, for people: "named-entity recognition", "text classification"
    predicts: str  # what the model outputs, in words: "IOB2 entity tags, one per word", "one class per text"
    headline: Headline
    unit: str  # what one scored row is, singular: "sentence", "text"
    count: int  # rows scored
    group: str  # what a group is, singular: "entity type", "class"
    groups: dict[str, GroupScore]
    behaviour: Behaviour | None = None  # None: this kind has no behavioural checks
    calibration: Calibration | None = None  # None: this kind's outputs are not probabilities of being right
    latency: Latency | None = None
    model_size_mb: float | None = None
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict)  # gold rows x predicted columns
    slices: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)  # by slice kind, then slice
    details: dict[str, Any] = Field(default_factory=dict)  # the kind's other scores, top-level keys in eval.json

    @property
    def units(self) -> str:
        """The unit, plural ("sentences")."""
        return f"{self.unit}s"

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any) -> Any:
        """Accept eval.json's layout (today's or the one before EvalReport) as well as the fields themselves."""
        if not isinstance(data, dict):
            return data
        if "incomparable" in data:
            raise ValueError(f"no scores: the model is incomparable ({data['incomparable']})")
        if "headline" not in data:
            data = _from_legacy(data)
        elif not isinstance(data["headline"], str):
            return data  # the fields themselves (a constructor call, model_validate of a dict of fields)
        fields = {key: value for key, value in data.items() if key in _FIELD_KEYS and key not in _HEADLINE_KEYS}
        missing = [key for key in _HEADLINE_KEYS if key not in data]
        if missing:
            raise ValueError(f"the headline score needs {', '.join(missing)}")
        fields["headline"] = {"name": data["headline"], "value": data["f1"], "precision": data["precision"],
                              "recall": data["recall"]}
        fields["details"] = {key: value for key, value in data.items() if key not in _FIELD_KEYS}
        return fields

    @model_validator(mode="after")
    def _details_do_not_shadow_fields(self) -> EvalReport:
        clash = sorted(set(self.details) & _FIELD_KEYS)
        if clash:
            raise ValueError(f"details {clash} would overwrite the report's own eval.json keys")
        return self

    @model_serializer(mode="wrap")
    def _to_file(self, handler) -> dict:
        """eval.json's layout: the headline as `headline` (its name), `f1`, `precision`, `recall`; the details
        at the top level; sections that are None (and an empty confusion or slices table) left out."""
        fields = handler(self)
        headline, details = fields.pop("headline"), fields.pop("details")
        layout = {key: value for key, value in fields.items()
                  if value is not None and not (key in ("confusion", "slices") and value == {})}
        layout.update(headline=headline["name"], f1=headline["value"], precision=headline["precision"],
                      recall=headline["recall"], groups=fields["groups"], **details)
        return layout

    @classmethod
    def read(cls, path: Path) -> EvalReport:
        """The report in an eval.json (either layout); a ValueError naming the file if it holds none."""
        outcome = read_outcome(path)
        if isinstance(outcome, Incomparable):
            raise ValueError(f"{path}: no scores: the model is incomparable ({outcome.incomparable})")
        return outcome

    def write(self, path: Path) -> None:
        """eval.json, atomically, keys sorted."""
        write_json(Path(path), self.model_dump(mode="json"))


def read_outcome(path: Path) -> EvalReport | Incomparable:
    """What `python -m tasks.evaluate` wrote: a report, or why the model could not be scored."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        if isinstance(data, dict) and set(data) == {"incomparable"}:
            return Incomparable.model_validate(data)
        return EvalReport.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: not an evaluation report: {exc}") from exc


# ---------------------------------------------------------------- the layout before EvalReport
#
# Frozen: it describes files already written (registered versions' eval.json and metadata), so it never
# follows later changes to the evaluation. An NER eval.json had no `task` key; a classifier's had
# "sequence-classification". Examples: tests/fixtures/eval_json_before_report/.

# "predicts": (a single-label model's, a multi-label one's); "behaviour": what a file without it held (NER
# measured behaviour: a file without it is "not measured", which the gate rejects, as it was).
_LEGACY = {
    "token-classification": {"title": "named-entity recognition",
                             "headline": "strict entity F1", "unit": "sentence", "group": "entity type",
                             "groups": "per_type", "count": "sentences",
                             "predicts": ("IOB2 entity tags, one per word", None), "behaviour": {}},
    "sequence-classification": {"title": "text classification",
                                "headline": "macro-F1", "unit": "text", "group": "class",
                                "groups": "per_class", "count": "examples",
                                "predicts": ("one class per text",
                                             "any number of classes per text, each at probability >= 0.5"),
                                "behaviour": None},
}


def _from_legacy(data: dict) -> dict:
    """An eval.json written before EvalReport, in today's layout (nothing dropped)."""
    rest = dict(data)
    task = rest.pop("task", "token-classification")
    if task not in _LEGACY:
        raise ValueError(f"unknown task {task!r} in an eval.json without a `headline`")
    legacy = _LEGACY[task]
    if legacy["count"] not in rest:
        raise ValueError(f"an eval.json without a `headline` needs {legacy['count']!r} (the rows scored)")
    layout = {"task": task, "title": legacy["title"], "predicts": legacy["predicts"][bool(rest.get("multi_label"))],
              "headline": legacy["headline"], "unit": legacy["unit"], "group": legacy["group"],
              "count": rest.pop(legacy["count"]), "groups": rest.pop(legacy["groups"], {})}
    if "ece" in rest:
        layout["calibration"] = {"ece": rest.pop("ece"), "bins": 10}
    behaviour = rest.pop("behaviour", legacy["behaviour"])
    if behaviour is not None:
        layout["behaviour"] = behaviour
    return {**layout, **rest}


# ---------------------------------------------------------------- measurements every kind takes


class LabelSetMismatch(ValueError):
    """The test data holds a tag or class the model does not know: the model cannot be scored on it (a
    champion trained on another label set is *incomparable*, not worse)."""


def model_size_mb(model_dir: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file()) / 1e6, 2)


def write_confusion_plot(path: Path, pairs: Sequence[tuple[str, str]]) -> None:
    """One `actual,predicted` row per case, for DVC's confusion template (`dvc plots show`)."""
    rows = "".join(f"{_csv(actual)},{_csv(predicted)}\n" for actual, predicted in pairs)
    atomic_write_text(Path(path), "actual,predicted\n" + rows)


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def latency(tag: Callable, sentences: Sequence[Sequence[str]]) -> dict:
    """Milliseconds per sentence at batch 1 (tokenization included), after one warm-up call."""
    if not sentences:
        return {"sentences": 0, "p50_ms": None, "p95_ms": None}
    tag(sentences[:1], 1)
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        tag([sentence], 1)
        times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) > 1 else times[0]
    return {"sentences": len(times), "p50_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2)}


class VariantRow(BaseModel):
    """One model of the compression table: the fp32 candidate (`variant` "fp32") or a compressed variant,
    all measured in one process on the CPU (tasks/compress.py)."""

    model_config = ConfigDict(frozen=True)

    variant: str
    score: float  # the headline score on the test split
    score_drop: float  # fp32 score - this score (0 for fp32)
    p50_ms: float | None
    p95_ms: float | None
    speedup: float | None  # fp32 p50 / this p50
    rows_per_second: float | None  # throughput at the evaluation's batch size
    size_mb: float
    agreement: float | None = None  # share of the fp32 model's test predictions reproduced (None for fp32)
    max_logit_diff: float | None = None  # largest |logit - fp32 logit| on a probe batch of test rows
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class CompressionReport(BaseModel):
    """compression.json: the score name, the thresholds applied, and one row per model (fp32 first; no rows
    when `compress.variants` is empty)."""

    model_config = ConfigDict(frozen=True)

    score_name: str
    unit: str  # what a row of the test split is: "sentence", "text"
    batch_size: int  # of the throughput column
    threads: int  # torch (and onnxruntime) intra-op threads of every timing
    cpu_flags: list[str]  # the int8-relevant ones (VNNI, AVX-512, AMX): int8 gains depend on them
    rows: list[VariantRow]

    @computed_field  # in compression.json too: what registration publishes, readable without this class
    @property
    def published(self) -> list[str]:
        """The variants that passed, in the params' order."""
        return [row.variant for row in self.rows if row.variant != FP32 and row.passed]

    def write(self, path: Path) -> None:
        write_json(Path(path), self.model_dump())

    @classmethod
    def read(cls, path: Path) -> CompressionReport:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def as_markdown(self) -> str:
        """The compression table (Prefect artifact, model card, `registry show`)."""
        lines = [f"| model | {self.score_name} | drop | p50 ms | p95 ms | speedup | {self.unit}s/s @{self.batch_size} "
                 "| MB | agreement | published |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.variant} | {r.score:.4f} | {r.score_drop:+.4f} | {_num(r.p50_ms)} | {_num(r.p95_ms)} | "
                         f"{_num(r.speedup, 'x')} | {_num(r.rows_per_second)} | {r.size_mb:.1f} | "
                         f"{_num(r.agreement, '', 4)} | {'-' if r.variant == FP32 else 'yes' if r.passed else 'no'} |")
        notes = [f"- {r.variant}: {'; '.join(r.reasons)}" for r in self.rows if r.reasons]
        return "\n".join([*lines, "", f"CPU: {self.threads} threads, flags: {' '.join(self.cpu_flags) or 'none'}",
                          *([""] + notes if notes else [])])


FP32 = "fp32"


def _num(value: float | None, suffix: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"
