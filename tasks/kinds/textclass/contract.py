"""Text classification's data contract (the validate stages): the tables Great Expectations checks (texts,
labels, class shares) with their expectations, and the data profile of the contract report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.contract import named
from tasks.kinds.textclass.datakind import TextClassData
from tasks.kinds.textclass.params import HINTS, TextclassParams, TextclassValidateParams
from tasks.kinds.textclass.records import TextExample
from tasks.params import ValidateParams, hint_for
from tasks.text import has_control_character

if TYPE_CHECKING:
    import pandas as pd

    from tasks.basemodel import PieceCounter


def text_table(split: str, examples: Sequence[TextExample], train_ids: dict[str, str],
               pieces: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per text: its lengths (words, sub-word pieces: 0 when not counted), label, blank and
    control-character flags, whether it repeats an earlier text of its split, and the id of the
    identical train text for a dev/test row ('' when none: the leakage check)."""
    import pandas as pd

    rows, seen = [], set()
    for example, n_pieces in zip(examples, pieces or [0] * len(examples), strict=True):
        rows.append({"id": example.id, "split": split, "n_words": len(example.text.split()), "n_pieces": n_pieces,
                     "text_blank": not example.text.strip(),
                     "text_control": has_control_character(example.text), "is_duplicate": example.text in seen,
                     "also_in_train": train_ids.get(example.text, "") if split != "train" else ""})
        seen.add(example.text)
    return pd.DataFrame(rows, columns=["id", "split", "n_words", "n_pieces", "text_blank", "text_control",
                                       "is_duplicate", "also_in_train"])


def label_table(splits: dict[str, list[TextExample]]) -> pd.DataFrame:
    """One row per label of each text (one per text for single-label data): what `label_in_set` checks."""
    import pandas as pd

    rows = [{"id": e.id, "label": label} for examples in splits.values() for e in examples for label in e.labels]
    return pd.DataFrame(rows, columns=["id", "label"])


def class_table(splits: dict[str, list[TextExample]], labels: Sequence[str]) -> pd.DataFrame:
    """One row per (split, class): the share of the split's texts that carry the class."""
    import pandas as pd

    rows = []
    for split, examples in splits.items():
        counts = Counter(label for e in examples for label in e.labels)
        for label in labels:
            rows.append({"id": f"{split} class {label!r}", "split": split, "label": label, "examples": counts[label],
                         "share": counts[label] / len(examples) if examples else 0.0})
    return pd.DataFrame(rows, columns=["id", "split", "label", "examples", "share"])


def text_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        named("row_count", e.ExpectTableRowCountToBeBetween(min_value=params.min_sentences)),
        named("text_not_blank", e.ExpectColumnValuesToBeInSet(column="text_blank", value_set=[False])),
        named("sentence_length", e.ExpectColumnValuesToBeBetween(
            column="n_words", min_value=1, max_value=params.max_tokens_per_sentence)),
        *([named("subword_length", e.ExpectColumnValuesToBeBetween(
            column="n_pieces", max_value=params.max_subword_pieces))] if params.max_subword_pieces else []),
        named("no_leakage", e.ExpectColumnValuesToBeInSet(column="also_in_train", value_set=[""])),
        named("duplicate_share", e.ExpectColumnMeanToBeBetween(
            column="is_duplicate", max_value=params.max_duplicate_share)),
        named("no_control_characters", e.ExpectColumnValuesToBeInSet(column="text_control", value_set=[False])),
    ]


def label_expectations(labels: Sequence[str]) -> list:
    import great_expectations as gx

    return [named("label_in_set", gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)))]


def class_expectations(params: TextclassValidateParams) -> list:
    import great_expectations as gx

    low, high = params.class_share
    return [named("class_balance", gx.expectations.ExpectColumnValuesToBeBetween(
        column="share", min_value=low, max_value=high))]


def declared_labels(labels: Sequence[str], splits: dict[str, list[TextExample]]) -> list[str]:
    """`labels` (task.labels), or (when empty) the labels of the train split, sorted."""
    return list(labels) or sorted({label for e in splits.get("train", []) for label in e.labels})


def count_text_pieces(counter: PieceCounter, splits: dict[str, list[TextExample]]) -> dict[str, list[int]]:
    """Sub-word pieces per text, special tokens included."""
    return {split: counter.text_pieces([e.text for e in examples]) if examples else []
            for split, examples in splits.items()}


def contract_tables(splits: dict[str, list[TextExample]], params: TextclassValidateParams, labels: Sequence[str],
                    counter: PieceCounter | None = None) -> dict[str, tuple[pd.DataFrame, list]]:
    """The tables the text contract checks, each with its expectations: texts and classes (`labels`, task.labels;
    empty: those of the train split)."""
    import pandas as pd

    labels = declared_labels(labels, splits)
    train_ids = {e.text: e.id for e in splits.get("train", [])}
    pieces = count_text_pieces(counter, splits) if counter is not None else {}
    texts = pd.concat([text_table(s, es, train_ids, pieces.get(s)) for s, es in splits.items()], ignore_index=True)
    return {"texts": (texts, text_expectations(params)),
            "labels": (label_table(splits), label_expectations(labels)),
            "classes": (class_table(splits, labels), class_expectations(params))}


def data_profile(splits: dict[str, list[TextExample]]) -> dict:
    """Numbers that describe the data, for `dvc metrics diff` between revisions."""
    examples = [e for es in splits.values() for e in es]
    return {
        "sentences": {split: len(es) for split, es in splits.items()},
        "words": {split: sum(len(e.text.split()) for e in es) for split, es in splits.items()},
        "classes": {split: dict(sorted(Counter(label for e in es for label in e.labels).items()))
                    for split, es in splits.items()},
        "duplicate_share": {split: round(1 - len({e.text for e in es}) / len(es), 6) if es else 0.0
                            for split, es in splits.items()},
        "max_text_words": max((len(e.text.split()) for e in examples), default=0),
    }


@dataclass(frozen=True)
class TextClassContract(TextClassData):
    """The text-classification kind as the validate stages see it (`tasks.kinds.contract_kind_for`): the data
    side and this contract."""

    def contract_tables(self, splits: dict[str, list[TextExample]], params: TextclassValidateParams,
                        counter=None) -> list:
        return contract_tables(splits, params, self.labels, counter)

    def contract_hint(self, check: str, checkpoint: str) -> str:
        return hint_for(HINTS, check, checkpoint)

    def data_profile(self, splits: dict[str, list[TextExample]]) -> dict:
        return data_profile(splits)


def kind(params: TextclassParams) -> TextClassContract:
    return TextClassContract(list(params.task.labels), params.task.multi_label)
