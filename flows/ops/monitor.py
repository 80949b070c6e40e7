"""The drift monitor: captured serving traffic of a window against the reference of the version that answered it.

`flowtune serve --capture` writes gzip JSONL batches to `s3://<capture bucket>/<model>/<yyyy-mm-dd>/<HH>-<id>.jsonl.gz`,
one line per answered item with its `stats` (tasks/drift.py). The monitor lists the batches of its window,
streams each one line by line into per-version histograms (memory does not grow with the traffic), and
compares every (model, version) with the `reference.json` stored in that registered version
(flows/ops/reference.py): one PSI per measure against its threshold (`monitor:` in params.yaml).

It reports, it never fails on what it finds: a table artifact per version, a JSON report and one SVG plot per version
in the reports bucket (`monitor/<run>/`), and, when a measure crossed its threshold, a `flowtune.drift.detected`
event naming the model (resource `flowtune.model.<name>`) with the measures that crossed. `flowtune deploy`
makes that event (or `flowtune.data.changed`) start the training deployment (prefect.yaml), and `flowtune notify`
posts it to the webhook. Batches that are not gzip, truncated or corrupt, and malformed lines, are skipped
and counted by file; a window without traffic, or with fewer than `min_items` items, says so.
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.exceptions import ClientError
from prefect import flow

from flows.names import DATA_CHANGED_EVENT, MONITOR_FLOW  # noqa: F401 - the trigger reacts to both events
from flows.ops.reference import REFERENCE_FILE
from flows.registry import Registry, RegistryError
from tasks.drift import LABELS, Batch, Key, Profile, Row, compare, read_batch
from tasks.params import MonitorParams, parse_duration
from tasks.settings import Settings, s3_client

DRIFT_EVENT = "flowtune.drift.detected"
REPORTS_PREFIX = "monitor/"


# ---------------------------------------------------------------- the window's batches


def batch_hour(key: str) -> datetime | None:
    """The hour a batch key names (`<model>/<yyyy-mm-dd>/<HH>-<id>.jsonl.gz`), or None for another name."""
    parts = key.split("/")
    try:
        day = datetime.strptime(parts[-2], "%Y-%m-%d").replace(tzinfo=UTC)
        return day + timedelta(hours=int(parts[-1].split("-", 1)[0]))
    except (IndexError, ValueError):
        return None


def days(since: datetime, until: datetime) -> Iterator[str]:
    day = since.date()
    while day <= until.date():
        yield day.isoformat()
        day += timedelta(days=1)


def list_models(client, bucket: str) -> list[str]:
    response = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    return sorted(p["Prefix"].rstrip("/") for p in response.get("CommonPrefixes", []))


def window_keys(client, bucket: str, model: str | None, since: datetime, until: datetime) -> list[str]:
    """Batch keys that may hold items of [since, until): their day folder is in the window and the hour they
    name is not after it (items are filtered by their own `ts` when read; an hour's batch may be flushed
    late, so a batch named up to an hour before `since` is read too). Keys of another shape are read."""
    keys = []
    paginator = client.get_paginator("list_objects_v2")
    for name in [model] if model else list_models(client, bucket):
        for day in days(since - timedelta(hours=1), until):
            for page in paginator.paginate(Bucket=bucket, Prefix=f"{name}/{day}/"):
                for obj in page.get("Contents", []):
                    hour = batch_hour(obj["Key"])
                    if hour is None or since - timedelta(hours=1) <= hour < until:
                        keys.append(obj["Key"])
    return keys


@dataclass
class Window:
    """The window's traffic: profiles by answering version, and the files' troubles."""

    since: datetime
    until: datetime
    files: int = 0
    items: int = 0
    outside: int = 0
    profiles: dict[Key, Profile] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why the whole file was skipped
    bad_lines: dict[str, dict] = field(default_factory=dict)  # key -> {"count", "examples"}
    missing_bucket: str | None = None

    def add(self, batch: Batch) -> None:
        self.files += 1
        if batch.error:
            self.skipped[batch.where] = batch.error
            return
        if batch.bad_lines:
            self.bad_lines[batch.where] = {"count": batch.bad_lines, "examples": batch.problems}
        self.items += batch.items
        self.outside += batch.outside
        for key, profile in batch.profiles.items():
            self.profiles.setdefault(key, Profile()).merge(profile)


def read_window(client, bucket: str, model: str | None, since: datetime, until: datetime) -> Window:
    """Every batch of the window, streamed one at a time (an unreadable object is skipped and named)."""
    window = Window(since, until)
    try:
        keys = window_keys(client, bucket, model, since, until)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        window.missing_bucket = f"the capture bucket {bucket!r} does not exist (is `flowtune serve --capture` on?)"
        return window
    for key in keys:
        where = f"s3://{bucket}/{key}"
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:  # deleted between list and read (gc), or refused
            window.files += 1
            window.skipped[where] = f"not readable: {exc}"
            continue
        with contextlib.closing(body):
            window.add(read_batch(body, where, since, until))
    return window


# ---------------------------------------------------------------- references and comparison


def registry_reference(registry: Registry) -> Callable[[Key], Profile | str]:
    """A loader of a version's reference profile; a string says why there is none."""
    cache: dict[Key, Profile | str] = {}

    def load(key: Key) -> Profile | str:
        if key not in cache:
            cache[key] = _load_reference(registry, *key)
        return cache[key]

    return load


def _load_reference(registry: Registry, name: str, version: int | None) -> Profile | str:
    if version is None:
        return "served from a model folder, not a registered version: no reference to compare with"
    try:
        manifest = registry.manifest(name, version)
    except RegistryError as exc:
        return f"no registered version to compare with ({exc})"
    if REFERENCE_FILE not in manifest.get("files", {}):
        return (f"v{version} has no {REFERENCE_FILE} (registered before reference profiles, or without a predictor "
                "that describes items): skipped; the next registered version will have one")
    key = f"{registry.prefix.strip('/')}/{name}/{version}/files/{REFERENCE_FILE}"
    where = f"s3://{registry.bucket}/{key}"
    try:
        data = json.loads(registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
        return Profile.from_json(data, where)
    except (ClientError, ValueError, KeyError, TypeError) as exc:
        return f"reference not usable: {exc}"


@dataclass
class VersionResult:
    model: str
    version: int | None
    items: int
    reference_items: int | None
    note: str | None  # why there is no comparison, or why there is no verdict
    rows: list[Row]
    window: Profile | None = None
    reference: Profile | None = None

    @property
    def drifted(self) -> list[Row]:
        return [r for r in self.rows if r.drifted]

    def as_json(self) -> dict:
        return {"model": self.model, "version": self.version, "items": self.items,
                "reference_items": self.reference_items, "note": self.note,
                "drifted": [r.measure for r in self.drifted],
                "rows": [{"measure": r.measure, "reference": r.reference, "window": r.window, "statistic": r.statistic,
                          "threshold": r.threshold, "verdict": r.verdict} for r in self.rows]}


def compare_window(window: Window, reference_of: Callable[[Key], Profile | str],
                   params: MonitorParams) -> list[VersionResult]:
    """One result per (model, version) that answered in the window, most items first."""
    results = []
    for (name, version), profile in sorted(window.profiles.items(), key=lambda kv: (-kv[1].items, kv[0][0])):
        reference = reference_of((name, version))
        if isinstance(reference, str):
            results.append(VersionResult(name, version, profile.items, None, reference, [], profile))
            continue
        rows = compare(reference, profile, params.thresholds, params.min_items, params.low_confidence)
        note = None
        if min(profile.items, reference.items) < params.min_items:
            note = (f"too few items for a verdict: {profile.items} in the window, {reference.items} in the reference "
                    f"(monitor.min_items: {params.min_items})")
        results.append(VersionResult(name, version, profile.items, reference.items, note, rows, profile, reference))
    return results


def report_of(window: Window, results: list[VersionResult], model: str | None) -> dict:
    """The JSON report: the window, its files' troubles, and each version's table."""
    if window.missing_bucket:
        status = window.missing_bucket
    elif not window.items:
        status = (f"no traffic in the window ({window.files} batch file(s) read"
                  f"{', ' + str(len(window.skipped)) + ' skipped' if window.skipped else ''})")
    else:
        status = f"{window.items} items from {window.files} batch file(s)"
    return {"window": {"since": window.since.isoformat(), "until": window.until.isoformat()}, "model": model,
            "status": status, "files": window.files, "items": window.items, "outside_window": window.outside,
            "skipped_files": window.skipped, "bad_lines": window.bad_lines,
            "drift": any(r.drifted for r in results), "versions": [r.as_json() for r in results]}


def run_monitor(settings: Settings, params: MonitorParams, since: datetime, until: datetime,
                model: str | None = None, client=None) -> tuple[dict, list[VersionResult]]:
    """Read, compare and report (no Prefect: the flow adds the artifacts, plots and event)."""
    client = client or s3_client(settings)
    window = read_window(client, settings.capture_bucket, model, since, until)
    registry = Registry(client, settings.registry_bucket, settings.registry_prefix)
    results = compare_window(window, registry_reference(registry), params)
    return report_of(window, results, model), results


# ---------------------------------------------------------------- what a run leaves behind


def text_table(report: dict) -> str:
    """The report as plain text for the terminal."""
    lines = [f"window {report['window']['since']} .. {report['window']['until']}: {report['status']}"]
    for key, why in report["skipped_files"].items():
        lines.append(f"  skipped {key}: {why}")
    for key, bad in report["bad_lines"].items():
        lines.append(f"  {bad['count']} malformed line(s) in {key}: {'; '.join(bad['examples'])}")
    for v in report["versions"]:
        lines.append(f"\n{v['model']} v{v['version']}: {v['items']} items" + (f" ({v['note']})" if v["note"] else ""))
        if v["rows"]:
            lines.append(f"  {'measure':<17} {'reference':<24} {'window':<24} {'PSI':>7} {'thresh':>6}  verdict")
        for r in v["rows"]:
            stat = "" if r["statistic"] is None else f"{r['statistic']:.4f}"
            lines.append(f"  {r['measure']:<17} {r['reference'][:24]:<24} {r['window'][:24]:<24} {stat:>7} "
                         f"{r['threshold']:>6}  {r['verdict']}")
    return "\n".join(lines)


PANEL_W, PANEL_H, COLUMNS = 300, 180, 4


def bucket_order(bucket: str) -> tuple:
    """Numeric bins in their order, then yes/no and categories by name."""
    return (not bucket.isdigit(), int(bucket) if bucket.isdigit() else 0, bucket)


def panel_svg(x0: int, y0: int, title: str, drifted: bool, ref: dict[str, int], win: dict[str, int]) -> list[str]:
    """One measure: the reference's share (grey) and the window's (blue) of each bucket, side by side."""
    buckets = sorted(set(ref) | set(win), key=bucket_order)[:14]
    r_total, w_total = sum(ref.values()) or 1, sum(win.values()) or 1
    plot_h, step = PANEL_H - 60, (PANEL_W - 20) / max(1, len(buckets))
    out = [f'<text x="{x0 + 10}" y="{y0 + 16}" font-size="13" fill="{"#c00" if drifted else "#000"}">'
           f"{html.escape(title)}</text>",
           f'<line x1="{x0 + 10}" y1="{y0 + 20 + plot_h}" x2="{x0 + PANEL_W - 10}" y2="{y0 + 20 + plot_h}" '
           'stroke="#888"/>']
    for n, bucket in enumerate(buckets):
        left = x0 + 10 + n * step
        for offset, share, colour in ((0.1, ref.get(bucket, 0) / r_total, "#999"),
                                      (0.5, win.get(bucket, 0) / w_total, "#36c")):
            height = share * plot_h
            out.append(f'<rect x="{left + offset * step:.1f}" y="{y0 + 20 + plot_h - height:.1f}" '
                       f'width="{0.4 * step:.1f}" height="{height:.1f}" fill="{colour}"/>')
        out.append(f'<text x="{left + step / 2:.1f}" y="{y0 + 34 + plot_h}" font-size="9" text-anchor="middle">'
                   f"{html.escape(bucket[:8])}</text>")
    return out


def plot_svg(result: VersionResult, params: MonitorParams) -> bytes:
    """Every measure's buckets, reference against window, one panel each, drifted panels titled in red: an
    SVG drawn here (a few kB, opens in any browser; docs/DECISIONS.md: no plotting library in the lock)."""
    rows = {r.measure: r for r in result.rows}
    measures = list(LABELS)
    height = 40 + PANEL_H * -(-len(measures) // COLUMNS)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_W * COLUMNS}" height="{height}" '
             'font-family="sans-serif">', '<rect width="100%" height="100%" fill="#fff"/>',
             f'<text x="10" y="24" font-size="16">{html.escape(result.model)} v{result.version}: {result.items} '
             f"items (blue) against {result.reference_items} reference items (grey)</text>"]
    for n, measure in enumerate(measures):
        row = rows.get(measure)
        stat = "" if row is None or row.statistic is None else f"  PSI {row.statistic:.3f}"
        parts += panel_svg((n % COLUMNS) * PANEL_W, 40 + (n // COLUMNS) * PANEL_H, f"{measure}{stat}",
                           row is not None and row.drifted,
                           result.reference.distribution(measure, params.low_confidence),
                           result.window.distribution(measure, params.low_confidence))
    return ("\n".join([*parts, "</svg>"]) + "\n").encode()


def publish_report(settings: Settings, run_id: str, report: dict, results: list[VersionResult],
                   params: MonitorParams, client=None) -> dict[str, str]:
    """The JSON report and one SVG plot per compared version in the reports bucket; their URLs by name."""
    client = client or s3_client(settings)
    base = f"{settings.endpoint_url.rstrip('/')}/{settings.reports_bucket}"
    urls = {}
    for result in results:
        if result.reference is None:
            continue
        key = f"{REPORTS_PREFIX}{run_id}/{result.model}-v{result.version}.svg"
        client.put_object(Bucket=settings.reports_bucket, Key=key, Body=plot_svg(result, params),
                          ContentType="image/svg+xml")
        urls[f"{result.model} v{result.version}"] = f"{base}/{key}"
    key = f"{REPORTS_PREFIX}{run_id}/report.json"
    client.put_object(Bucket=settings.reports_bucket, Key=key, Body=json.dumps(report, indent=2).encode(),
                      ContentType="application/json")
    urls["report"] = f"{base}/{key}"
    return urls


def drift_summary(result: VersionResult) -> str:
    return ", ".join(f"{r.measure} (PSI {r.statistic:.3f} > {r.threshold}: {r.reference} -> {r.window})"
                     for r in result.drifted)


def drift_events(results: list[VersionResult], report_url: str | None) -> list[dict]:
    """One event per drifted model version: the arguments of `prefect.events.emit_event`."""
    return [{"event": DRIFT_EVENT,
             "resource": {"prefect.resource.id": f"flowtune.model.{r.model}", "prefect.resource.name": r.model,
                          "flowtune.model.version": str(r.version)},
             "payload": {"model": r.model, "version": r.version, "items": r.items, "report": report_url,
                         "summary": f"{r.model} v{r.version} drifted on {r.items} items: {drift_summary(r)}",
                         "measures": [{"measure": x.measure, "statistic": x.statistic, "threshold": x.threshold,
                                       "reference": x.reference, "window": x.window} for x in r.drifted]}}
            for r in results if r.drifted]


def resolve_window(since: str | None, params: MonitorParams,
                   until: datetime | None = None) -> tuple[datetime, datetime]:
    """[until - since, until), `since` a duration ("24h"), `monitor.window` by default."""
    until = until or datetime.now(UTC)
    return until - parse_duration(since or params.window), until


@flow(name=MONITOR_FLOW, log_prints=True)
def drift_monitor(since: str | None = None, model: str | None = None, params_file: str = "params.yaml") -> dict:
    """Compare the captured traffic of the last `since` (default: `monitor.window`) with each answering version's
    reference; publish the table, plots and JSON report; emit `flowtune.drift.detected` for each drifted model.
    Never fails on drift, on bad batch files or on an empty window: it says so in its report."""
    from prefect import get_run_logger
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    from tasks.params import load_params

    params = load_params(params_file).monitor
    settings = Settings()
    report, results = run_monitor(settings, params, *resolve_window(since, params), model)
    try:
        urls = publish_report(settings, str(flow_run.get_id() or "local"), report, results, params)
    except Exception as exc:  # noqa: BLE001 - the verdicts stand without the copies; say what is missing
        get_run_logger().warning("the monitor report was not copied to the reports bucket: %s", exc)
        urls = {}
    report["links"] = urls
    create_artifacts(report, results, urls)
    for event in drift_events(results, urls.get("report")):
        emit_event(**event)
        print(event["payload"]["summary"])
    print(text_table(report))
    return report


def create_artifacts(report: dict, results: list[VersionResult], urls: dict[str, str]) -> None:
    """A table artifact per compared version (measure, reference, window, statistic, threshold, verdict) and
    the run's summary."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    for result in results:
        if result.rows:
            create_table_artifact(
                key=artifact_key(result), table=[{"measure": r.measure, "reference": r.reference, "window": r.window,
                                                  "statistic": r.statistic, "threshold": r.threshold,
                                                  "verdict": r.verdict} for r in result.rows],
                description=f"Drift of {result.model} v{result.version}: {result.items} items"
                            + (f" ({result.note})" if result.note else ""))
    create_markdown_artifact(key="drift-summary", markdown=summary_markdown(report, urls),
                             description="Drift monitor: the window and every version's verdict")


def artifact_key(result: VersionResult) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes only."""
    slug = "".join(c if c.isalnum() else "-" for c in result.model.lower())
    return f"drift-{slug}-v{result.version}"


def summary_markdown(report: dict, urls: dict[str, str]) -> str:
    lines = [f"# Drift monitor: {report['status']}", "",
             f"Window {report['window']['since']} .. {report['window']['until']}", ""]
    for v in report["versions"]:
        verdict = (f"**drift**: {', '.join(v['drifted'])}" if v["drifted"] else v["note"] or "no drift")
        link = urls.get(f"{v['model']} v{v['version']}")
        lines.append(f"- `{v['model']}` v{v['version']}: {v['items']} items, {verdict}"
                     + (f" ([plots]({link}))" if link else ""))
    for key, why in report["skipped_files"].items():
        lines.append(f"- skipped `{key}`: {why}")
    for key, bad in report["bad_lines"].items():
        lines.append(f"- {bad['count']} malformed line(s) in `{key}` (e.g. {bad['examples'][0]})")
    if "report" in urls:
        lines += ["", f"JSON report: {urls['report']}"]
    return "\n".join(lines) + "\n"
