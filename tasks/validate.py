"""Validate step: a Great Expectations suite over NER records, as a data contract.

NER data is nested (a sentence is a list of tokens and tags) and GX validates tables, so the records
become two tables: one row per sentence and one row per token. The suite is built in code from
params.yaml, runs on every split, and a failure stops the pipeline before anything is trained, with up
to five example records (file:line ids) per failed expectation.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.iob import entity_spans, iob2_errors, label_list
from tasks.params import Params, ValidateParams
from tasks.records import NerRecord, iter_splits, load_jsonl, write_json
from tasks.stage import run_stage

MAX_EXAMPLES = 5
CHECKPOINTS = ("raw", "clean", "augmented")  # where in the pipeline the contract runs


def checkpoint_paths(params, data: str) -> tuple[str, str]:
    """(data folder, contract report) for a checkpoint name."""
    paths = params.paths
    return {"raw": (paths.raw, paths.contract_raw), "clean": (paths.clean, paths.contract_clean),
            "augmented": (paths.augmented, paths.contract_augmented)}[data]


def sentence_table(split: str, records: list[NerRecord], train_ids: dict[tuple[str, ...], str]) -> pd.DataFrame:
    """One row per sentence: id, split, lengths, first IOB2 problem ('' when valid), whether it repeats
    an earlier sentence of its split, and the id of the identical train sentence for a dev/test row
    ('' when none: the leakage check)."""
    rows, seen = [], set()
    for r in records:
        problems = iob2_errors(r.tags)
        leaked_from = train_ids.get(r.tokens, "") if split != "train" else ""
        rows.append({
            "id": r.id,
            "split": split,
            "n_tokens": len(r.tokens),
            "n_tags": len(r.tags),
            "iob2_problem": problems[0] if problems else "",
            "is_duplicate": r.tokens in seen,
            "also_in_train": leaked_from,
        })
        seen.add(r.tokens)
    return pd.DataFrame(rows, columns=["id", "split", "n_tokens", "n_tags", "iob2_problem", "is_duplicate",
                                       "also_in_train"])


def has_control_character(token: str) -> bool:
    """Control (Cc) or format (Cf: zero-width, bidi marks) characters: invisible, and they split
    differently in tokenizers than they look."""
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in token)


def token_table(split: str, records: list[NerRecord]) -> pd.DataFrame:
    """One row per token: the sentence id, position, token text and tag."""
    rows = [
        {"id": f"{r.id} token {i}", "split": split, "token": tok, "tag": tag, "token_blank": not tok.strip(),
         "token_control": has_control_character(tok)}
        for r in records
        for i, (tok, tag) in enumerate(zip(r.tokens, r.tags))  # noqa: B905 (length mismatch is reported by the sentence table)
    ]
    return pd.DataFrame(rows, columns=["id", "split", "token", "tag", "token_blank", "token_control"])


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


def named(check: str, expectation):
    """Tag an expectation with our check name (the key of `validate.soft` and of the report)."""
    expectation.meta = {**(expectation.meta or {}), "check": check}
    return expectation


def sentence_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        named("row_count", e.ExpectTableRowCountToBeBetween(min_value=params.min_sentences)),
        named("length_match", e.ExpectColumnPairValuesToBeEqual(column_A="n_tokens", column_B="n_tags")),
        named("sentence_length", e.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=params.max_tokens_per_sentence)),
        named("iob2_valid", e.ExpectColumnValuesToBeInSet(column="iob2_problem", value_set=[""])),
        named("no_leakage", e.ExpectColumnValuesToBeInSet(column="also_in_train", value_set=[""])),
        named("duplicate_share", e.ExpectColumnMeanToBeBetween(
            column="is_duplicate", max_value=params.max_duplicate_share)),
    ]


def token_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    expected = [
        named("token_not_blank", e.ExpectColumnValuesToBeInSet(column="token_blank", value_set=[False])),
        named("no_control_characters", e.ExpectColumnValuesToBeInSet(column="token_control", value_set=[False])),
    ]
    if params.entity_types:
        expected.append(named("tag_in_label_set", e.ExpectColumnValuesToBeInSet(
            column="tag", value_set=label_list(params.entity_types))))
    return expected


@dataclass(frozen=True)
class Outcome:
    """One expectation's result in plain types, ready for JSON, a Prefect table and an error message."""

    check: str
    table: str
    expectation: str
    column: str
    success: bool
    observed: str
    unexpected_count: int
    examples: list[str]

    def describe(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        lines = [f"- {self.expectation} on {target}: observed {self.observed}"]
        lines += [f"    e.g. {example}" for example in self.examples]
        return "\n".join(lines)


def run_suite(name: str, table: pd.DataFrame, expectations: list) -> list[Outcome]:
    """Run expectations on a table with an ephemeral GX context and return plain outcomes."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_contract"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]},
    )
    return [_outcome(name, r) for r in result.results]


def _outcome(table: str, result) -> Outcome:
    config = result.expectation_config
    column = config.kwargs.get("column") or "/".join(
        str(config.kwargs[k]) for k in ("column_A", "column_B") if k in config.kwargs
    )
    details = result.result or {}
    unexpected = details.get("unexpected_index_list") or []
    examples = [_example(row, column) for row in unexpected[:MAX_EXAMPLES]]
    count = int(details.get("unexpected_count") or 0)
    observed = details.get("observed_value")
    return Outcome(
        check=(config.meta or {}).get("check", config.type),
        table=table,
        expectation=config.type,
        column=column,
        success=bool(result.success),
        observed=str(observed) if observed is not None else f"{count} unexpected rows",
        unexpected_count=count,
        examples=examples,
    )


def _example(row: dict, column: str) -> str:
    record_id = row.get("id", "?")
    # .item(): numpy scalars print as np.float64(0.0); users should read 0.0
    values = ", ".join(f"{k}={getattr(v, 'item', lambda v=v: v)()!r}" for k, v in row.items() if k != "id")
    return f"{record_id}: {values}" if values else str(record_id)


def profile_expectations(params: ValidateParams) -> list:
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


def validate_records(splits: dict[str, list[NerRecord]], params: ValidateParams) -> list[Outcome]:
    """Run the sentence, token and entity-profile suites over all splits together."""
    train_ids = {r.tokens: r.id for r in splits.get("train", [])}
    sentences = pd.concat([sentence_table(s, rs, train_ids) for s, rs in splits.items()], ignore_index=True)
    tokens = pd.concat([token_table(s, rs) for s, rs in splits.items()], ignore_index=True)
    outcomes = run_suite("sentences", sentences, sentence_expectations(params))
    outcomes += run_suite("tokens", tokens, token_expectations(params))
    reference = load_reference(params.reference_profile)
    if reference:
        everything = [r for rs in splits.values() for r in rs]
        outcomes += run_suite("entity_profile", profile_table(everything, reference), profile_expectations(params))
    return outcomes


class ContractError(RuntimeError):
    """The data broke its contract; the message lists each failed expectation with examples."""


def run(params: ValidateParams, data_dir: Path, report_path: Path) -> dict:
    """Validate `<data_dir>/<split>.jsonl`, write the report, raise ContractError on failure."""
    splits = {split: load_jsonl(path) for split, path in iter_splits(data_dir)}
    outcomes = validate_records(splits, params)
    failed = [o for o in outcomes if not o.success and o.check not in params.soft]
    warnings = [o for o in outcomes if not o.success and o.check in params.soft]
    report = {
        "success": not failed,
        "evaluated": len(outcomes),
        "failed": len(failed),
        "warnings": len(warnings),
        "sentences": {split: len(rs) for split, rs in splits.items()},
        "unexpected": {o.check: o.unexpected_count for o in outcomes},
        "expectations": [{**o.__dict__, "severity": "soft" if o.check in params.soft else "hard"}
                         for o in outcomes],
    }
    write_json(report_path, report)
    if failed:
        details = "\n".join(o.describe() for o in failed)
        raise ContractError(f"data contract failed for {data_dir} ({len(failed)} expectations):\n{details}")
    return report


def step(params: Params, args) -> str:
    data_dir, report_path = checkpoint_paths(params, args.data)
    report = run(params.validate_, Path(data_dir), Path(report_path))
    summary = f"{report['evaluated']} expectations checked on {args.data} data {report['sentences']}"
    warnings = [Outcome(**{k: v for k, v in e.items() if k != "severity"})
                for e in report["expectations"] if not e["success"]]
    return summary + "".join(f"\nwarning (soft, validate.soft): {w.describe()}" for w in warnings)


def main(argv: list[str] | None = None) -> None:
    def add_arguments(parser):
        parser.add_argument("--data", choices=CHECKPOINTS, default="raw", help="which data to check")

    run_stage("validate", step, argv, add_arguments=add_arguments, user_errors=(ContractError,))


if __name__ == "__main__":
    main()
