"""Turn each stage's report file into a Prefect artifact on the flow run.

The report files are the stages' own outputs (DVC metrics), so the UI shows exactly what
`dvc metrics show` shows, also when DVC skipped a stage because nothing changed.
"""

from __future__ import annotations

import csv
import json
import mimetypes
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.orchestration.gate import Champion
from tasks.io import INGEST_REPORT
from tasks.metrics import FP32, CompressionReport, EvalReport
from tasks.params import Params
from tasks.settings import Settings, s3_client


def _load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _split_rows(report: dict) -> list[dict]:
    return [{"split": split, **counts} for split, counts in report["splits"].items()]


def publish(stage: str, params: Params, settings: Settings | None = None, run_id: str = "local") -> dict:
    """Create the stage's artifacts and return its report (small: counts and scores only).

    With `settings`, a contract stage's Data Docs site is also uploaded to the reports bucket under
    `data-docs/<run_id>/<checkpoint>/` and linked from the flow run.
    """
    if stage in CONTRACT_STAGES:
        data = CONTRACT_STAGES[stage]
        summary = _contract(params, data)
        if settings is not None:
            summary["data_docs"] = publish_data_docs(params, data, settings, run_id)
        return summary
    publishers = {"ingest": _ingest, "clean": _clean, "augment": _augment, "train": _train, "evaluate": _evaluate,
                  "teacher_logits": _teacher_logits, "distill": _distill, "compress": _compress}
    return publishers[stage](params)


CONTRACT_STAGES = {"validate": "raw", "validate_clean": "clean", "validate_augmented": "augmented"}


def upload_site(client, bucket: str, site: Path, prefix: str) -> int:
    """Upload every file of a static site with its content type (browsers render, not download)."""
    files = sorted(p for p in site.rglob("*") if p.is_file())
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(site).as_posix()}",
                           ExtraArgs={"ContentType": content_type})
    return len(files)


def publish_data_docs(params: Params, data: str, settings: Settings, run_id: str) -> str:
    """Upload the checkpoint's GX Data Docs and link its index page from the flow run; the URL."""
    site = Path(params.paths.checkpoint(data)[2])
    prefix = f"data-docs/{run_id}/{data}"
    upload_site(s3_client(settings), settings.reports_bucket, site, prefix)
    url = f"{settings.endpoint_url.rstrip('/')}/{settings.reports_bucket}/{prefix}/index.html"
    create_link_artifact(key=f"data-docs-{data}", link=url, link_text=f"Great Expectations Data Docs ({data} data)",
                         description=f"GX Data Docs of the data contract on {data} data")
    return url


def publish_model_card(settings: Settings, name: str, version: int, card: str) -> str:
    """A copy of a registered version's model card in the reports bucket (readable from a browser without
    credentials, unlike the registry); its URL. The card holds no secret: params, metrics, lineage links."""
    key = f"model-cards/{name}/{version}.md"
    s3_client(settings).put_object(Bucket=settings.reports_bucket, Key=key, Body=card.encode(),
                                   ContentType="text/plain; charset=utf-8")
    return f"{settings.endpoint_url.rstrip('/')}/{settings.reports_bucket}/{key}"


def publish_sweep_plots(settings: Settings, study: str, run_id: str, pages: dict[str, str]) -> dict[str, str]:
    """A sweep's HTML plots in the reports bucket under `sweeps/<study>/<run_id>/`, each linked from the flow
    run (a browser opens them without credentials, as the Data Docs); their URLs by name."""
    client, urls = s3_client(settings), {}
    for name, html in pages.items():
        key = f"sweeps/{study}/{run_id}/{name}.html"
        client.put_object(Bucket=settings.reports_bucket, Key=key, Body=html.encode(),
                          ContentType="text/html; charset=utf-8")
        urls[name] = f"{settings.endpoint_url.rstrip('/')}/{settings.reports_bucket}/{key}"
        create_link_artifact(key=f"sweep-{name}", link=urls[name], link_text=f"{study}: {name.replace('-', ' ')}",
                             description=f"Optuna study {study!r}: {name.replace('-', ' ')} (plotly HTML)")
    return urls


def _ingest(params: Params) -> dict:
    report = _load(Path(params.paths.raw) / INGEST_REPORT)
    rows, description = ingest_table(report)
    create_table_artifact(key="ingest", table=rows, description=description)
    return report


def ingest_table(report: dict) -> tuple[list[dict], str]:
    """The ingest artifact: a row per split, then (a folder of batch files) a row per batch with where its
    rows went; the description names the files that were not read."""
    rows = [{"split": split, "sentences": n} for split, n in report["splits"].items()]
    rows += [{"split": f"batch {batch['file']} ({', '.join(f'{s} {n}' for s, n in batch['splits'].items())})",
              "sentences": batch["rows"]} for batch in report.get("batches", [])]
    ignored = f"; ignored (not a type the kind reads): {', '.join(report['ignored'])}" if report.get("ignored") else ""
    return rows, f"Imported {report['source']}{ignored}"


CONTRACT_ARTIFACT_KEYS = {"raw": "data-contract", "clean": "data-contract-clean",
                          "augmented": "data-contract-augmented"}


def _contract(params: Params, data: str) -> dict:
    report = _load(params.paths.checkpoint(data)[1])
    rows = [
        {"check": e["check"], "severity": e["severity"], "success": e["success"], "observed": e["observed"],
         "expected": e["expected"],
         "expectation": e["expectation"], "on": f"{e['table']}.{e['column']}".rstrip(".")}
        for e in report["expectations"]
    ]
    create_table_artifact(key=CONTRACT_ARTIFACT_KEYS[data], table=rows,
                          description=f"Great Expectations data contract on {data} data")
    return {k: report[k] for k in ("success", "evaluated", "failed", "warnings")}


def _clean(params: Params) -> dict:
    report = _load(params.paths.clean_report)
    create_table_artifact(key="cleaning", table=_split_rows(report), description="Cleaning changes by kind")
    return report


def _augment(params: Params) -> dict:
    """One row per augmenter: sentences added, and every outcome (accepted, each drop reason) counted."""
    report = _load(params.paths.augment_report)
    rows = [{"augmenter": method, **counts} for method, counts in report["by_method"].items()]
    sizes = ", ".join(f"{split} {n}" for split, n in report["sentences"].items())
    create_table_artifact(key="augmentation", table=rows or [{"augmenter": "none", "added": 0}],
                          description=f"Train-only augmentation: {report['added']} sentences added ({sizes}); "
                                      "dev and test copied byte for byte")
    return {k: report[k] for k in ("added", "sentences")}


def _train(params: Params) -> dict:
    metrics = _load(params.paths.train_metrics)
    with open(params.paths.train_plots, newline="", encoding="utf-8") as handle:
        curve = list(csv.DictReader(handle))
    lines = ["# Training", ""] + [f"- {k}: {v}" for k, v in sorted(metrics.items())]
    lines += ["", "| epoch | train loss | dev F1 |", "|---|---|---|"]
    lines += [f"| {row['epoch']} | {float(row['train_loss']):.4f} | {_score(row['dev_f1'])} |" for row in curve]
    create_markdown_artifact(key="training", markdown="\n".join(lines), description="Training summary")
    return metrics


def _score(value: str) -> str:
    return f"{float(value):.4f}" if value else "n/a"  # empty when there is no dev split


def _evaluate(params: Params) -> dict:
    report = EvalReport.read(Path(params.paths.eval_metrics))
    score = report.headline
    rows = [{report.group: f"ALL ({score.name})", "precision": score.precision, "recall": score.recall,
             "f1": score.value, "support": sum(g.support for g in report.groups.values())}]
    rows += [{report.group: name, **scores.model_dump()} for name, scores in sorted(report.groups.items())]
    create_table_artifact(key="evaluation", table=rows, description=f"{score.name} by {report.group}, test split")
    create_markdown_artifact(key="evaluation-details", markdown=evaluation_details(report),
                             description="Other scores, confusion, calibration, slices, behavioural checks, latency")
    return {"f1": score.value, "precision": score.precision, "recall": score.recall}


def _teacher_logits(params: Params) -> dict:
    """Nothing to show: the teacher's logits are an intermediate file (its size says whether it is empty)."""
    path = Path(params.paths.teacher_logits)
    return {"teacher_logits": str(path), "bytes": path.stat().st_size if path.exists() else 0}


def _distill(params: Params) -> dict:
    """The student's training summary (distill.json), as a markdown artifact when distillation ran."""
    metrics = _load(params.paths.student_metrics)
    if metrics.get("enabled"):
        lines = ["# Distillation", ""] + [f"- {k}: {v}" for k, v in sorted(metrics.items())]
        create_markdown_artifact(key="distillation", markdown="\n".join(lines),
                                 description="The student's training (judged by the compress stage)")
    return metrics


def _compress(params: Params) -> dict:
    """The `compression` table: each variant against the fp32 candidate, and which ones are published."""
    report = CompressionReport.read(Path(params.paths.compression))
    if not report.rows:  # compress.variants: [] (nothing built, nothing timed)
        return {"published": []}
    rows = [{"variant": r.variant, report.score_name: round(r.score, 4), "drop": round(r.score_drop, 4),
             "p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "speedup": r.speedup,
             f"{report.unit}s_per_s_batch_{report.batch_size}": r.rows_per_second, "size_mb": r.size_mb,
             "agreement": r.agreement, "published": "-" if r.variant == FP32 else "yes" if r.passed else "no",
             "why_not": "; ".join(r.reasons)} for r in report.rows]
    create_table_artifact(key="compression", table=rows,
                          description=f"Variants of the candidate on the CPU ({report.threads} threads, "
                                      f"{' '.join(report.cpu_flags) or 'no int8 CPU flags'}); test split")
    return {"published": report.published}


def latency_lines(report: EvalReport) -> list[str]:
    latency = report.latency
    if latency is None:
        return ["", "- latency: not measured", f"- model size on disk: {report.model_size_mb} MB"]
    throughput = latency.batch_sentences_per_second or 0
    return ["", f"- latency at batch 1 ({latency.device}): p50 {latency.p50_ms} ms, "
            f"p95 {latency.p95_ms} ms per {report.unit}; batch {latency.batch_size}: {throughput:.1f} per second",
            f"- model size on disk: {report.model_size_mb} MB"]


def evaluation_details(report: EvalReport) -> str:
    """Markdown: the headline and the other scores, calibration, the confusion table, scores by slice,
    behavioural pass rates, latency and size (each section the report has)."""
    score = report.headline
    lines = ["# Evaluation details", "",
             f"- {score.name} {score.value:.4f} (precision {score.precision:.4f}, recall {score.recall:.4f}) on "
             f"{report.count} {report.units}; the model predicts {report.predicts}",
             *[f"- {key}: {_detail(value)}" for key, value in sorted(report.details.items())],
             *([f"- expected calibration error {report.calibration.ece:.4f} ({report.calibration.bins} bins; 0 = the "
                "predicted probability is the chance of being right)"] if report.calibration else []), ""]
    if report.confusion:
        lines += confusion_markdown(report.confusion, f"{report.group[:1].upper()}{report.group[1:]} confusion")
    for kind, groups in report.slices.items():
        columns = list(dict.fromkeys(column for row in groups.values() for column in row))
        lines += ["", f"## Scores by {kind}", "", "| slice | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(_detail(row.get(c, "")) for c in columns) + " |"
                  for name, row in groups.items()]
    checks = report.behaviour.checks() if report.behaviour else {}
    if checks:
        lines += ["", "## Behavioural checks", "", "| check | cases | passed | pass rate |", "|---|---:|---:|---:|"]
        for name, row in checks.items():
            shown = "n/a" if row.pass_rate is None else f"{row.pass_rate:.2%}"
            lines.append(f"| {name} | {row.cases} | {row.passed} | {shown} |")
    return "\n".join(lines + latency_lines(report))


def _detail(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def champion_markdown(params: Params, alias: str, champion: Champion) -> str:
    """The registered model behind `alias` scored on the current test data, with its details."""
    report = champion.report
    if not isinstance(report, EvalReport):
        raise ValueError(f"{params.registry.model_name}:{alias} cannot label this test set: {report.incomparable}")
    score = report.headline
    head = [f"# `{params.registry.model_name}:{alias}` (v{champion.version}) on the current test data", "",
            f"- {score.name} **{score.value:.4f}** (precision {score.precision:.4f}, recall {score.recall:.4f})", "",
            f"| {report.group} | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    head += [f"| {name} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | {m.support} |"
             for name, m in sorted(report.groups.items())]
    return "\n".join(head) + "\n\n" + evaluation_details(report)


def confusion_markdown(table: dict[str, dict[str, int]], title: str = "Entity confusion") -> list[str]:
    """Gold types as rows, predicted types (plus missed) as columns; spurious predictions as the last row."""
    columns = sorted({column for counts in table.values() for column in counts})
    lines = [f"## {title} (rows: gold, columns: predicted)", "",
             "| gold \\ predicted | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row, counts in table.items():
        lines.append(f"| {row} | " + " | ".join(str(counts.get(c, "")) for c in columns) + " |")
    return lines
