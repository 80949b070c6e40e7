"""The data contract on pulled rows, before anything is written: `label pull` runs the kind's own contract
(tasks/contract.py, the suites of the validate stage) over the rows it converted, and refuses by Label Studio task
id every row that breaks one of its row checks; the rows that pass are imported (docs/DECISIONS.md, 76).

The checks are those of the `clean` checkpoint (what training data must meet; by default every check is hard
there): a pulled row is labelled data we produce, so it must not lean on cleaning to repair or drop it (a blank
token or a train copy of a test sentence would be dropped there, and the annotator's work silently with it).
Checks over a whole split (row count, duplicate share, class balance, entity profile) say nothing about one row:
the validate stage checks them on the data the batch joins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tasks.contract import ContractError, Outcome, run_contract

# Properties of a whole split, not of a row: checked by `validate` after ingest, never a reason to refuse a task.
SPLIT_CHECKS = frozenset({"row_count", "duplicate_share", "entity_distribution", "train_has_entities",
                          "class_balance"})
CHECKPOINT = "clean"  # whose soft checks a pulled row may break

# What a row must be, in words, for the refusal line (other checks: the expectation's own bounds).
EXPECTED = {
    "token_not_blank": "no empty or blank token",
    "text_not_blank": "a text that is not blank",
    "no_control_characters": "no control or invisible characters",
    "tag_in_label_set": "tags of task.labels only",
    "label_in_set": "a class of task.labels",
    "iob2_valid": "valid IOB2 tags",
    "length_match": "one tag per token",
    "sentence_length": "1 to validate.max_tokens_per_sentence words",
    "subword_length": "at most validate.max_subword_pieces sub-word pieces",
    "no_leakage": "a sentence that is not in dev or test",
}


def record_of(example: str, record_ids: Sequence[str]) -> str | None:
    """The record id a contract example starts with (`<id>: values`, or the token table's `<id> token 2 'x'`)."""
    for record_id in sorted(record_ids, key=len, reverse=True):
        if example.startswith(record_id) and example[len(record_id):len(record_id) + 1] in ("", " ", ":"):
            return record_id
    return None


def why(outcome: Outcome, example: str, record_id: str) -> str:
    """One line: which check, where in the row and what value, what was expected."""
    rest = example[len(record_id):].split(": ", 1)
    where, values = (rest[0].strip(), rest[1] if len(rest) > 1 else "")
    value = re.search(rf"(?:^|, ){re.escape(outcome.column)}=([^,]*)", values) if outcome.column else None
    found = f"{where + ': ' if where else ''}{outcome.column}={value[1]}" if value else (where or outcome.observed)
    expected = EXPECTED.get(outcome.check, outcome.expected)
    return f"breaks the data contract's {outcome.check} check ({found}); expected {expected}"


def contract_refusals(batch: Path, params, kind, tasks: dict[str, int], counter=None) -> dict[int, str]:
    """Task id -> why, for the rows of `batch` (read back with the kind's reader, as ingest reads it) that break a
    row check of the data contract; `tasks`: each row's record id -> its Label Studio task id. ContractError when a
    check fails and names no pulled row (nothing can be refused alone: the whole pull is). `counter` counts
    sub-word pieces (None: subword_length not checked)."""
    records: Sequence = kind.source_reader(params.ingest)(batch)
    validate = params.validate_
    ignored = SPLIT_CHECKS | set(validate.soft_checks(CHECKPOINT))
    if getattr(validate, "reference_profile", None):  # NER: the entity profile is a split check; not read here
        validate = validate.model_copy(update={"reference_profile": None})
    refused: dict[int, str] = {}
    while records:
        # Every offending id, not five: a row refused is one row fewer. The token table names the first row
        # of each distinct (token, tag) pair, so another row with the same pair shows on the next round.
        outcomes = run_contract(kind.contract_tables({"train": list(records)}, validate, counter),
                                examples=len(records))
        failed = [o for o in outcomes if not o.success and o.check not in ignored]
        if not failed:
            break
        before = len(refused)
        for outcome in failed:
            for example in outcome.examples:
                record = record_of(example, list(tasks))
                if record is not None and tasks[record] not in refused:
                    refused[tasks[record]] = why(outcome, example, record)
        if len(refused) == before:
            described = "; ".join(o.describe().replace("\n", " ") for o in failed)
            raise ContractError(f"the pulled rows break the data contract and no task can be named: {described}")
        records = [r for r in records if tasks.get(r.id) not in refused]
    return refused
