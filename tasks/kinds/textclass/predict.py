"""A saved text classifier answering requests (`tasks/kinds/base.py: ModelPredictor`), for `flowtune predict`
and `flowtune serve`: reading CSV / JSONL texts or plain lines, classifying them (one window of `max_length`
pieces each) with every class's probability, writing JSONL or label<TAB>probability<TAB>text lines, scoring
against gold labels, and the per-item statistics production monitoring records."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tasks.kinds.base import Item
from tasks.kinds.textclass.modeling import MULTI_LABEL, SavedClassifier, multilabel_scores, scores
from tasks.kinds.textclass.records import LABEL_JOIN, TextExample
from tasks.textstats import piece_statistics, text_statistics

HEAD_CLASS = AutoModelForSequenceClassification
SCORE_DIGITS = 6


@dataclass
class TextClassPredictor:
    """The model loads on first use (`saved`): reading a bad input file fails before that, in a moment."""

    model_dir: Path
    labels: list[str]  # the classes in id order, from config.json
    multi_label: bool
    max_length: int
    batch_size: int
    kind: str = "textclass"
    answer_kind: str = "classifier"
    stdin_suffix: str = ".jsonl"
    _saved: SavedClassifier | None = field(default=None, repr=False)
    _describer: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def saved(self) -> SavedClassifier:
        """The classifier (a transformers model or a variant), in eval mode."""
        with self._lock:
            if self._saved is None:
                self._saved = SavedClassifier.load(self.model_dir)
            return self._saved

    def read_input(self, path: Path) -> tuple[list[Item], list[str], list | None]:
        """A .csv or .jsonl file with a `text` column; with a `label` column too (a multi-label model: labels
        joined by `|` or a JSON list), gold labels, which must be classes of the model."""
        from tasks.io import InputFormatError
        from tasks.kinds.textclass.records import read_text_examples

        path = Path(path)
        labelled = has_column(path, "label")
        separator = LABEL_JOIN if self.multi_label else None
        examples = read_text_examples(path, "text", "label" if labelled else None, separator)
        unknown = sorted({label for e in examples for label in e.labels} - set(self.labels)) if labelled else []
        if unknown:
            raise InputFormatError(f"{path}: labels {unknown} are not classes of the model ({self.labels})")
        return [e.text for e in examples], [e.id for e in examples], [e.label for e in examples] if labelled else None

    def read_lines(self, lines: Sequence[str]) -> tuple[list[Item], list[str]]:
        """One text a line; ids name the line (`line:<n>`, blank lines counted)."""
        numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
        return [text for _, text in numbered], [f"line:{n}" for n, _ in numbered]

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        examples = [TextExample(i, item if isinstance(item, str) else " ".join(item), "")
                    for i, item in zip(ids, items, strict=True)]
        probabilities, chosen = self.saved.classify(examples, self.batch_size, self.max_length)
        return [{"id": e.id, "text": e.text, "label": label,
                 "probabilities": {name: round(float(p), SCORE_DIGITS) for name, p in zip(self.labels, row,
                                                                                             strict=True)}}
                for e, row, label in zip(examples, probabilities, chosen, strict=True)]

    def describe(self, items: Sequence[Item], answers: Sequence[dict]) -> list[dict]:
        texts = [item if isinstance(item, str) else " ".join(item) for item in items]
        pieces = piece_statistics(self._describing_tokenizer(), texts)
        rows = []
        for text, answer, counts in zip(texts, answers, pieces, strict=True):
            confidence = self.confidence(list(answer["probabilities"].values()))
            rows.append({**text_statistics(text), **counts,
                         "confidence": confidence, "min_confidence": confidence,
                         "predicted": [label for label in answer["label"].split(LABEL_JOIN) if label]})
        return rows

    def confidence(self, probabilities: Sequence[float]) -> float:
        """The probability of the decision: the chosen class's, or (multi-label: one yes/no decision per class)
        the mean over classes of max(p, 1 - p)."""
        if not probabilities:
            return 1.0
        if self.multi_label:
            return sum(max(p, 1 - p) for p in probabilities) / len(probabilities)
        return max(probabilities)

    def _describing_tokenizer(self):
        """A tokenizer of describe's own: a fast tokenizer is not safe to call from two threads at once, and
        `predict` may be using the model's in the serving thread."""
        with self._lock:
            if self._describer is None:
                self._describer = AutoTokenizer.from_pretrained(self.model_dir)
            return self._describer

    def write(self, answers: Sequence[dict], fmt: str | None, out: IO[str]) -> None:
        for answer in answers:
            if fmt == "jsonl":
                out.write(json.dumps(answer, ensure_ascii=False) + "\n")
            else:  # the label (multi-label: labels joined by |) and its probability (each label's)
                chosen, probabilities = answer["label"], answer["probabilities"]
                shown = "|".join(f"{probabilities[c]:.4f}" for c in chosen.split(LABEL_JOIN) if c)
                out.write(f"{chosen or '(none)'}\t{shown or '-'}\t{answer['text']}\n")

    def score(self, gold: Sequence, answers: Sequence[dict]) -> str:
        predicted = [a["label"] for a in answers]
        if self.multi_label:
            result = multilabel_scores(list(gold), predicted, self.labels)
        else:
            result = scores(list(gold), predicted, self.labels)
        return (f"gold labels in the input: macro-F1 {result['macro_f1']:.4f}, accuracy {result['accuracy']:.4f} "
                f"on {result['examples']} texts")


def has_column(path: Path, column: str) -> bool:
    """Whether the first row of a .csv/.jsonl input has `column` (a missing or malformed file is the
    reader's to report)."""
    import csv

    from tasks.io import InputFormatError, nonblank_lines

    if not path.is_file():
        return False
    try:
        first = next((line for _, line in nonblank_lines(path)), None)
    except InputFormatError:
        return False
    if first is None:
        return False
    if path.suffix.lower() == ".csv":
        header = next(csv.reader([first]), [])
        return column in [name.strip() for name in header]
    try:
        return column in json.loads(first)
    except (json.JSONDecodeError, TypeError, RecursionError):
        return False


def load(model_dir: Path, batch_size: int = 32, max_length: int | None = None) -> TextClassPredictor:
    """The folder's classifier (or variant of it), truncating at the length it was trained with; its weights
    load on first use."""
    from tasks.kinds.saved import trained_max_length
    from tasks.variants import config_labels, saved_config

    multi_label = saved_config(model_dir).get("problem_type") == MULTI_LABEL
    return TextClassPredictor(Path(model_dir), config_labels(model_dir), multi_label,
                              max_length or trained_max_length(model_dir), batch_size)
