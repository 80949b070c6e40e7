"""The NER data contract's tables: one row per sentence, one per token, and the entity profile against a
reference, each with its expectations (run by tasks/contract.py from the validate stage).

NER data is nested (a sentence is a list of tokens and tags) and GX validates tables, so the records
become these tables; failures name up to five example records (file:line ids).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tasks.contract import ContractError, Outcome, named, run_contract
from tasks.iob import entity_spans, iob2_errors, label_list
from tasks.kinds.ner.datakind import NerData
from tasks.kinds.ner.params import HINTS, NerParams, NerValidateParams
from tasks.kinds.ner.records import NerRecord
from tasks.params import hint_for
from tasks.text import has_control_character

if TYPE_CHECKING:
    from tasks.basemodel import PieceCounter


def sentence_table(split: str, records: list[NerRecord], train_ids: dict[tuple[str, ...], str],
                   pieces: list[int] | None = None) -> pd.DataFrame:
    """One row per sentence: id, split, lengths in words and in sub-word pieces (0 when not counted),
    first IOB2 problem ('' when valid), whether it repeats an earlier sentence of its split, and the id
    of the identical train sentence for a dev/test row ('' when none: the leakage check)."""
    rows, seen = [], set()
    pieces = pieces or [0] * len(records)
    for r, n_pieces in zip(records, pieces, strict=True):
        problems = iob2_errors(r.tags)
        leaked_from = train_ids.get(r.tokens, "") if split != "train" else ""
        rows.append({
            "id": r.id,
            "split": split,
            "n_tokens": len(r.tokens),
            "n_tags": len(r.tags),
            "n_pieces": n_pieces,
            "iob2_problem": problems[0] if problems else "",
            "is_duplicate": r.tokens in seen,
            "also_in_train": leaked_from,
        })
        seen.add(r.tokens)
    return pd.DataFrame(rows, columns=["id", "split", "n_tokens", "n_tags", "n_pieces", "iob2_problem",
                                       "is_duplicate", "also_in_train"])


def count_pieces(counter: PieceCounter, splits: dict[str, list[NerRecord]]) -> dict[str, list[int]]:
    """Sub-word pieces per sentence, special tokens included: what the encoder sees of it.

    With pre-split words each word is encoded on its own, so a sentence's count is the sum over its
    words plus the special tokens: each distinct word is encoded once (a corpus repeats most words).
    """
    words = sorted({token for rs in splits.values() for r in rs for token in r.tokens})
    pieces = dict(zip(words, counter.word_pieces(words), strict=True)) if words else {}
    return {split: [counter.special_tokens + sum(pieces[t] for t in r.tokens) for r in rs]
            for split, rs in splits.items()}


def token_table(splits: dict[str, list[NerRecord]]) -> pd.DataFrame:
    """One row per distinct (token, tag) pair, with its first occurrence as id and its count.

    Every token check is a property of the token or the tag alone, so checking each distinct pair
    once is the same check as on every token, at a fraction of the rows; the examples of a failure
    then show different offending tokens rather than one token five times.
    """
    first: dict[tuple[str, str], str] = {}
    counts: Counter = Counter()
    for records in splits.values():
        for r in records:
            for i, pair in enumerate(zip(r.tokens, r.tags)):  # noqa: B905 (the sentence table reports length mismatches)
                counts[pair] += 1
                if pair not in first:
                    first[pair] = f"{r.id} token {i} {pair[0]!r}"
    rows = [{"id": where, "token": tok, "tag": tag, "occurrences": counts[(tok, tag)],
             "token_blank": not tok.strip(), "token_control": has_control_character(tok)}
            for (tok, tag), where in first.items()]
    return pd.DataFrame(rows, columns=["id", "token", "tag", "occurrences", "token_blank", "token_control"])


def entity_profile(records: list[NerRecord]) -> dict[str, float]:
    """Each entity type's share of all entity mentions (the distribution a reference is compared to)."""
    counts = Counter(label for r in records for label, _, _ in entity_spans(r.tags))
    total = sum(counts.values())
    return {label: count / total for label, count in sorted(counts.items())} if total else {}


def profile_table(records: list[NerRecord], reference: dict[str, float]) -> pd.DataFrame:
    """One row per reference entity type: its share in `records` over its reference share (1.0 = same;
    0.0 = the type vanished, as after a broken import that tags everything O)."""
    observed = entity_profile(records)
    rows = [{"id": f"entity type {label!r}", "share": observed.get(label, 0.0), "reference_share": ref,
             "ratio": observed.get(label, 0.0) / ref} for label, ref in reference.items() if ref > 0]
    return pd.DataFrame(rows, columns=["id", "share", "reference_share", "ratio"])


def mention_table(train: list[NerRecord]) -> pd.DataFrame:
    """The train split's entity mentions: a tagger cannot learn from a split without any, whatever the
    reference profile says (or when there is none)."""
    mentions = sum(1 for r in train for _ in entity_spans(r.tags))
    return pd.DataFrame([{"id": "train split", "mentions": mentions}], columns=["id", "mentions"])


def mention_expectations() -> list:
    import great_expectations as gx

    return [named("train_has_entities",
                  gx.expectations.ExpectColumnValuesToBeBetween(column="mentions", min_value=1))]


def sentence_expectations(params: NerValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        named("row_count", e.ExpectTableRowCountToBeBetween(min_value=params.min_sentences)),
        named("length_match", e.ExpectColumnPairValuesToBeEqual(column_A="n_tokens", column_B="n_tags")),
        named("sentence_length", e.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=params.max_tokens_per_sentence)),
        *([named("subword_length", e.ExpectColumnValuesToBeBetween(
            column="n_pieces", max_value=params.max_subword_pieces))] if params.max_subword_pieces else []),
        named("iob2_valid", e.ExpectColumnValuesToBeInSet(column="iob2_problem", value_set=[""])),
        named("no_leakage", e.ExpectColumnValuesToBeInSet(column="also_in_train", value_set=[""])),
        named("duplicate_share", e.ExpectColumnMeanToBeBetween(
            column="is_duplicate", max_value=params.max_duplicate_share)),
    ]


def token_expectations(entity_types: Sequence[str]) -> list:
    import great_expectations as gx

    e = gx.expectations
    expected = [
        named("token_not_blank", e.ExpectColumnValuesToBeInSet(column="token_blank", value_set=[False])),
        named("no_control_characters", e.ExpectColumnValuesToBeInSet(column="token_control", value_set=[False])),
    ]
    if entity_types:
        expected.append(named("tag_in_label_set", e.ExpectColumnValuesToBeInSet(
            column="tag", value_set=label_list(entity_types))))
    return expected


def profile_expectations(params: NerValidateParams) -> list:
    import great_expectations as gx

    low, high = params.entity_share_ratio
    return [named("entity_distribution",
                  gx.expectations.ExpectColumnValuesToBeBetween(column="ratio", min_value=low, max_value=high))]


def load_reference(path: str | None) -> dict[str, float]:
    """The committed entity-type profile to compare against; {} (no distribution check) when unset."""
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())["entity_share"]
    except (OSError, KeyError, ValueError) as exc:
        raise ContractError(f"{path}: cannot read the reference entity profile ({exc}); expected JSON "
                            '{"entity_share": {"<type>": <share>, ...}}') from exc


def contract_tables(splits: dict[str, list[NerRecord]], params: NerValidateParams, entity_types: Sequence[str],
                    counter: PieceCounter | None = None) -> dict[str, tuple[pd.DataFrame, list]]:
    """The tables the contract checks, each with its expectations: sentences, tokens (tags of `entity_types`;
    empty: any) and (with a reference profile) entity types. `counter` counts sub-word pieces (None: not
    checked)."""
    train_ids = {r.tokens: r.id for r in splits.get("train", [])}
    pieces = count_pieces(counter, splits) if counter is not None else {}
    sentences = pd.concat([sentence_table(s, rs, train_ids, pieces.get(s)) for s, rs in splits.items()],
                          ignore_index=True)
    tables = {"sentences": (sentences, sentence_expectations(params)),
              "tokens": (token_table(splits), token_expectations(entity_types))}
    if "train" in splits:
        tables["train_mentions"] = (mention_table(splits["train"]), mention_expectations())
    reference = load_reference(params.reference_profile)
    if reference:
        everything = [r for rs in splits.values() for r in rs]
        tables["entity_profile"] = (profile_table(everything, reference), profile_expectations(params))
    return tables


def validate_records(splits: dict[str, list[NerRecord]], params: NerValidateParams, entity_types: Sequence[str],
                     counter: PieceCounter | None = None, docs_dir: Path | None = None) -> list[Outcome]:
    """Run the sentence, token and entity-profile suites over all splits together."""
    return run_contract(contract_tables(splits, params, entity_types, counter), docs_dir)


def data_profile(splits: dict[str, list[NerRecord]]) -> dict:
    """Numbers that describe the data, per split where it matters, for `dvc metrics diff` between revisions."""
    records = [r for rs in splits.values() for r in rs]
    return {
        "sentences": {split: len(rs) for split, rs in splits.items()},
        "tokens": {split: sum(len(r.tokens) for r in rs) for split, rs in splits.items()},
        "entities": {split: sum(len(entity_spans(r.tags)) for r in rs) for split, rs in splits.items()},
        "duplicate_share": {split: round(1 - len({r.tokens for r in rs}) / len(rs), 6) if rs else 0.0
                            for split, rs in splits.items()},
        "max_sentence_tokens": max((len(r.tokens) for r in records), default=0),
        "entity_share": {label: round(share, 6) for label, share in entity_profile(records).items()},
    }


@dataclass(frozen=True)
class NerContract(NerData):
    """The NER kind as the validate stages see it (`tasks.kinds.contract_kind_for`): the data side and this
    contract."""

    def contract_tables(self, splits: dict[str, list[NerRecord]], params: NerValidateParams, counter=None) -> list:
        return contract_tables(splits, params, self.entity_types, counter)

    def contract_hint(self, check: str, checkpoint: str) -> str:
        return hint_for(HINTS, check, checkpoint)

    def data_profile(self, splits: dict[str, list[NerRecord]]) -> dict:
        return data_profile(splits)


def kind(params: NerParams) -> NerContract:
    return NerContract(list(params.task.labels))
