"""Wall time of a `flowtune run`, split by step, read back from the Prefect server.

Usage (after `make run`, with the services still up):

    .venv/bin/python benchmarks/pipeline_walltime.py            # the latest flowtune-pipeline run
    .venv/bin/python benchmarks/pipeline_walltime.py --run-id ID

Prints a markdown table (step, seconds, share of the flow run) and the run's strict F1 from
data/metrics/eval.json, ready to paste into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.settings import Settings  # noqa: E402


def seconds_between(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def latest_run(api: httpx.Client, flow_name: str) -> dict:
    query = {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1}
    runs = api.post("flow_runs/filter", json=query).raise_for_status().json()
    if not runs:
        raise SystemExit(f"no run of flow {flow_name!r} on {api.base_url}")
    return runs[0]


def step_times(api: httpx.Client, run_id: str) -> list[tuple[str, float]]:
    """(task run name, seconds) in start order; retried tasks count their whole span."""
    query = {"task_runs": {"flow_run_id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    tasks = api.post("task_runs/filter", json=query).raise_for_status().json()
    return [(t["name"], seconds_between(t["start_time"], t["end_time"])) for t in tasks]


def markdown(run: dict, steps: list[tuple[str, float]], f1: float | None) -> str:
    total = seconds_between(run["start_time"], run["end_time"])
    lines = [f"Flow run `{run['name']}` ({run['state_type']}), total {total:.1f} s", "",
             "| step | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {secs:.1f} | {secs / total:.0%} |" for name, secs in steps]
    if f1 is not None:
        lines += ["", f"Strict IOB2 entity F1 on test: {f1:.4f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", help="flow run id (default: the latest run of the flow)")
    parser.add_argument("--flow", default="flowtune-pipeline")
    args = parser.parse_args(argv)
    from flows.ops.services import prefect_auth_header

    settings = Settings()
    # The local server wants its basic auth (PREFECT_API_AUTH_STRING in .env) on every call.
    api = httpx.Client(base_url=settings.api_url.rstrip("/") + "/", headers=prefect_auth_header(settings), timeout=30)
    run = (api.get(f"flow_runs/{args.run_id}").raise_for_status().json()
           if args.run_id else latest_run(api, args.flow))
    metrics = ROOT / "data" / "metrics" / "eval.json"
    f1 = json.loads(metrics.read_text())["f1"] if metrics.exists() else None
    print(markdown(run, step_times(api, run["id"]), f1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
