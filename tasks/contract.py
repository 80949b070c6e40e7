"""The data contract's runner, whatever the data: Great Expectations over named tables, plain outcomes.

A task kind turns its records into tables (pandas DataFrames with an `id` column) and attaches the
expectations each table must meet (`named`, so `validate.soft` and the report can refer to a check);
`run_contract` validates them in one ephemeral GX context, optionally builds the Data Docs site, and
returns one `Outcome` per expectation with up to `MAX_EXAMPLES` offending record ids.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

MAX_EXAMPLES = 5


class ContractError(RuntimeError):
    """The data broke its contract; the message lists each failed expectation with examples."""


def named(check: str, expectation):
    """Tag an expectation with our check name (the key of `validate.soft` and of the report)."""
    expectation.meta = {**(expectation.meta or {}), "check": check}
    return expectation


@dataclass(frozen=True)
class Outcome:
    """One expectation's result in plain types, ready for JSON, a Prefect table and an error message."""

    check: str
    table: str
    expectation: str
    column: str
    success: bool
    observed: str
    expected: str
    unexpected_count: int
    examples: list[str]

    def describe(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        lines = [f"- {self.check} ({self.expectation} on {target}): observed {self.observed}, expected {self.expected}"]
        lines += [f"    e.g. {example}" for example in self.examples]
        return "\n".join(lines)


# Result format: counts plus the first MAX_EXAMPLES offending rows with their record ids, so a failing
# expectation on a million rows costs no more memory than on ten.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES,
                 "unexpected_index_column_names": ["id"]}
DOCS_SITE = "flowtune"


def run_contract(tables: dict[str, tuple[pd.DataFrame, list]], docs_dir: Path | None = None,
                 examples: int = MAX_EXAMPLES) -> list[Outcome]:
    """Validate each table with its expectations in one ephemeral GX context; plain outcomes.

    `examples`: offending record ids kept per expectation (`label pull` asks for every one, to refuse by task).

    With `docs_dir`, also build the GX Data Docs site there (an index page, one page per suite and one
    per validation result), written to a temporary folder first and swapped in whole.
    """
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    staging = docs_dir.with_name(docs_dir.name + ".tmp") if docs_dir else None
    if staging:
        shutil.rmtree(staging, ignore_errors=True)
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staging.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    outcomes: list[Outcome] = []
    # A table of a large split (millions of token rows) takes a while: progress in tables, rows in the note.
    progress = Progress("validate: contract tables", len(tables), "tables")
    for name, (table, expectations) in tables.items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_contract", expectations=expectations))
        batch = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
        definition = context.validation_definitions.add(gx.ValidationDefinition(
            name=f"{name}_validation", data=batch.add_batch_definition_whole_dataframe("all"), suite=suite))
        result_format = {**RESULT_FORMAT, "partial_unexpected_count": max(examples, MAX_EXAMPLES)}
        result = definition.run(batch_parameters={"dataframe": table}, result_format=result_format)
        outcomes += [_outcome(name, r, examples) for r in result.results]
        progress.advance(note=f"{name}: {len(table):,} rows, {len(expectations)} expectations")
    progress.finish()
    if staging and docs_dir:
        context.build_data_docs(site_names=[DOCS_SITE])
        _drop_tutorial_images(staging)
        shutil.rmtree(docs_dir, ignore_errors=True)
        staging.rename(docs_dir)
    return outcomes


def _drop_tutorial_images(site: Path) -> None:
    """GX ships 3 MB of tutorial GIFs/PNGs with every site; the pages only use the favicon and SVG logos."""
    for image in (site / "static" / "images").glob("*"):
        if image.suffix in {".gif", ".png"}:
            image.unlink()


def _outcome(table: str, result, limit: int = MAX_EXAMPLES) -> Outcome:
    config = result.expectation_config
    column = config.kwargs.get("column") or "/".join(
        str(config.kwargs[k]) for k in ("column_A", "column_B") if k in config.kwargs
    )
    details = result.result or {}
    unexpected = details.get("partial_unexpected_index_list") or []
    examples = [_example(row, column) for row in unexpected[:limit]]
    count = int(details.get("unexpected_count") or 0)
    observed = details.get("observed_value")
    return Outcome(
        check=(config.meta or {}).get("check", config.type),
        table=table,
        expectation=config.type,
        column=column,
        success=bool(result.success),
        expected=_expected(config.kwargs),
        observed=_observed(observed, count, details.get("element_count")),
        unexpected_count=count,
        examples=examples,
    )


def _observed(value, unexpected: int, rows: int | None) -> str:
    if value is None:
        return f"{unexpected} unexpected of {rows} rows" if rows is not None else f"{unexpected} unexpected rows"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _expected(kwargs: dict) -> str:
    """The expectation's bounds or allowed values, short enough for one line."""
    parts = [f"{key}={kwargs[key]!r}" for key in ("min_value", "max_value", "value_set") if kwargs.get(key) is not None]
    text = ", ".join(parts) or "pairs equal"
    return text if len(text) <= 120 else text[:117] + "..."


def _example(row: dict, column: str) -> str:
    record_id = row.get("id", "?")
    # .item(): numpy scalars print as np.float64(0.0); users should read 0.0
    values = ", ".join(f"{k}={getattr(v, 'item', lambda v=v: v)()!r}" for k, v in row.items() if k != "id")
    return f"{record_id}: {values}" if values else str(record_id)
