"""A saved NER model answering requests (`tasks/kinds/base.py: ModelPredictor`), for `flowtune predict` and
`flowtune serve`: reading CoNLL / JSONL sentences or plain lines, tagging them in windows of `max_length`
pieces with each tag's probability, writing CoNLL or JSONL, scoring against gold tags, and the per-item
statistics production monitoring records."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from transformers import AutoModelForTokenClassification, AutoTokenizer

from tasks.iob import split_tag
from tasks.kinds.base import Item
from tasks.kinds.ner.modeling import predict_tags_and_scores
from tasks.textstats import piece_statistics, text_statistics

HEAD_CLASS = AutoModelForTokenClassification
SCORE_DIGITS = 6


@dataclass
class NerPredictor:
    """The model loads on first use (`model`): reading a bad input file fails before that, in a moment."""

    model_dir: Path
    labels: list[str]  # the IOB2 tags in id order, from config.json
    max_length: int
    batch_size: int
    kind: str = "ner"
    answer_kind: str = "tagger"
    stdin_suffix: str = ".conll"
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)
    _describer: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> Any:
        """A transformers token classifier or a variant (tasks/variants.py), in eval mode."""
        return self._model_and_tokenizer()[0]

    @property
    def tokenizer(self) -> Any:
        return self._model_and_tokenizer()[1]

    def _model_and_tokenizer(self) -> tuple[Any, Any]:
        from tasks.variants import load_model

        with self._lock:
            if self._loaded is None:
                self._loaded = (load_model(self.model_dir, HEAD_CLASS), AutoTokenizer.from_pretrained(self.model_dir))
            return self._loaded

    def read_input(self, path: Path) -> tuple[list[Item], list[str], list | None]:
        """CoNLL or (.jsonl) JSONL sentences: tagged ones go through the validating readers (gold = their
        tags), tokens-only ones (one CoNLL column, JSONL rows without `tags`) are sentences to tag."""
        records, tagged = read_sentences(Path(path))
        gold = [list(r.tags) for r in records] if tagged else None
        return [list(r.tokens) for r in records], [r.id for r in records], gold

    def read_lines(self, lines: Sequence[str]) -> tuple[list[Item], list[str]]:
        """Whitespace-tokenized sentences, one a line; ids number the sentences (`line:1`, ...)."""
        sentences = [line.split() for line in lines if line.strip()]
        return sentences, [f"line:{i + 1}" for i in range(len(sentences))]

    def predict(self, items: Sequence[Item], ids: Sequence[str]) -> list[dict]:
        sentences = [item.split() if isinstance(item, str) else list(item) for item in items]
        tags, scores = predict_tags_and_scores(self.model, self.tokenizer, sentences, self.batch_size, self.max_length)
        return [{"id": i, "tokens": tokens, "tags": predicted, "scores": [round(p, SCORE_DIGITS) for p in probs]}
                for i, tokens, predicted, probs in zip(ids, sentences, tags, scores, strict=True)]

    def describe(self, items: Sequence[Item], answers: Sequence[dict]) -> list[dict]:
        texts = [item if isinstance(item, str) else " ".join(item) for item in items]
        pieces = piece_statistics(self._describing_tokenizer(), texts)
        rows = []
        for text, answer, counts in zip(texts, answers, pieces, strict=True):
            scores = answer.get("scores") or []
            confidence = sum(scores) / len(scores) if scores else 1.0  # no token: nothing to be unsure of
            rows.append({**text_statistics(text), **counts,
                         "confidence": confidence, "min_confidence": min(scores, default=1.0),
                         "predicted": entity_types(answer["tags"])})
        return rows

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
            else:  # CoNLL: token<TAB>tag lines, a blank line after each sentence
                out.write("".join(f"{token}\t{tag}\n" for token, tag in zip(answer["tokens"], answer["tags"],
                                                                            strict=True)) + "\n")

    def score(self, gold: Sequence, answers: Sequence[dict]) -> str:
        from tasks.kinds.ner.evaluate import score

        scores = score([list(tags) for tags in gold], [a["tags"] for a in answers])
        return (f"gold tags in the input: strict F1 {scores['f1']:.4f}, precision {scores['precision']:.4f}, "
                f"recall {scores['recall']:.4f} on {scores['sentences']} sentences")


def entity_types(tags: Sequence[str]) -> list[str]:
    """The type of each predicted entity, in order: a B-X, or an I-X that does not continue an X (a model's
    output need not be valid IOB2; seqeval's default mode counts such an I-X as an entity too)."""
    types, previous = [], None
    for tag in tags:
        prefix, entity = split_tag(tag)
        if entity is not None and (prefix == "B" or entity != previous):
            types.append(entity)
        previous = entity if prefix in ("B", "I") else None
    return types


def read_sentences(path: Path) -> tuple[list, bool]:
    """Records of a CoNLL / JSONL file and whether they carry gold tags (decided by the first row)."""
    from tasks.io import InputFormatError, nonblank_lines, read_jsonl_objects
    from tasks.kinds.ner.records import read_records, read_untagged

    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if path.suffix == ".jsonl":
        rows = read_jsonl_objects(path, '{"tokens": ["..."]}')  # errors name the line
        if rows and "tags" in rows[0][1]:
            return read_records(path, "jsonl"), True
        return read_untagged(path, "jsonl"), False
    first = next((line for _, line in nonblank_lines(path) if not line.startswith("-DOCSTART-")), "")
    if len(first.split()) > 1:
        return read_records(path, "conll"), True
    return read_untagged(path, "conll"), False


def load(model_dir: Path, batch_size: int = 32, max_length: int | None = None) -> NerPredictor:
    """The folder's tagger (or variant of it), windowing at the length it was trained with; its weights
    load on first use."""
    from tasks.kinds.saved import trained_max_length
    from tasks.variants import config_labels

    return NerPredictor(Path(model_dir), config_labels(model_dir), max_length or trained_max_length(model_dir),
                        batch_size)
