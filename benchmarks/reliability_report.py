"""Render the fault-injection suite's rows (tests/faults, written to .pytest_cache/flowtune/reliability.json
by the last test session) as the table of docs/RELIABILITY.md.

    .venv/bin/python -m pytest tests/faults          # runs the faults, records the rows
    .venv/bin/python benchmarks/reliability_report.py --write docs/RELIABILITY.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / ".pytest_cache" / "flowtune" / "reliability.json"
BEGIN, END = "<!-- reliability-table:begin -->", "<!-- reliability-table:end -->"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def numbers_text(numbers: dict) -> str:
    return "; ".join(f"{key} {value}" for key, value in numbers.items()) or "-"


def table(report: dict) -> str:
    lines = ["| fault | what happened | recovered | lost | measured |", "|---|---|---|---|---|"]
    for row in sorted(report["rows"], key=lambda r: r["test"]):
        lines.append(f"| {cell(row['fault'])} | {cell(row['happened'])} | {'yes' if row['recovered'] else '**no**'} "
                     f"| {cell(row['lost'])} | {cell(numbers_text(row['numbers']))} |")
    lines.append("")
    lines.append(f"Rows written by the test session of {report['written_at']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--write", type=Path, help=f"replace the table between {BEGIN} and {END} in this file")
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"{args.report}: no rows; run `pytest tests/faults` first", file=sys.stderr)
        return 1
    rendered = table(json.loads(args.report.read_text()))
    if not args.write:
        print(rendered)
        return 0
    text = args.write.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.write}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    args.write.write_text(f"{head}{BEGIN}\n{rendered}\n{END}{rest.split(END, 1)[1]}")
    print(f"{args.write}: {rendered.count(chr(10)) - 3} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
