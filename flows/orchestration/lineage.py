"""What a registered version records about where it came from."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prefect.runtime import flow_run

from flows.orchestration.gate import Decision
from flows.redact import scrub_urls
from flows.registry import VARIANTS_FOLDER
from tasks.metrics import CompressionReport, EvalReport
from tasks.params import Params
from tasks.settings import Settings


def git_state() -> dict:
    """The commit the code came from and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


def dvc_lock() -> dict | None:
    """This checkout's dvc.lock (what every stage last ran on), or None without one."""
    path = Path("dvc.lock")
    return yaml.safe_load(path.read_text()) if path.exists() else None


def build_lineage(params: Params, decision: Decision, settings: Settings) -> dict:
    """Lineage for the registry: code, data and params hashes, metrics (the evaluation report, read and so
    checked before anything is published), gate and flow run. No secrets: every URL in it loses its
    credentials (a PREFECT_API_URL with user:password, a data source URL with a token)."""
    run_id = flow_run.get_id()
    return scrub_urls({
        "git": git_state(),
        "dvc_lock": dvc_lock(),
        "params": params.model_dump(by_alias=True),
        "metrics": EvalReport.read(Path(params.paths.eval_metrics)).model_dump(mode="json"),
        "training": json.loads(Path(params.paths.train_metrics).read_text()),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
        "compression": compression_of(params),
        "flow_run": {"id": str(run_id) if run_id else None,
                     "url": f"{settings.ui_url}/runs/flow-run/{run_id}" if run_id else None},
        "registered_at": datetime.now(UTC).isoformat(),
    })


def compression_of(params: Params) -> dict | None:
    """The compress stage's table (every variant, published or not), or None when the stage did not run."""
    path = Path(params.paths.compression)
    return CompressionReport.read(path).model_dump(mode="json") if path.is_file() else None


@contextlib.contextmanager
def staged_model_dir(params: Params, lineage: dict) -> Iterator[Path]:
    """A temporary copy of the candidate with eval.json and lineage.json beside the weights, the drift monitor's
    reference profile (reference.json, made by the evaluate stage: flows/ops/reference.py), and the variants
    that passed the compress stage under `variants/<name>/` (flows/registry.py: none of these is in the digest)."""
    from flows.ops.reference import REFERENCE_FILE, reference_or_none

    with tempfile.TemporaryDirectory(prefix="flowtune-register-") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(params.paths.model, staged)
        for name in (lineage.get("compression") or {}).get("published", []):
            shutil.copytree(Path(params.paths.variants) / name, staged / VARIANTS_FOLDER / name)
        shutil.copyfile(params.paths.eval_metrics, staged / "eval.json")
        (staged / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
        (staged / "README.md").write_text(model_card(params, lineage), encoding="utf-8")
        reference = reference_or_none(params)  # written before the publish: it appears with the version
        if reference is not None:
            (staged / REFERENCE_FILE).write_text(json.dumps(reference), encoding="utf-8")
        yield staged


def model_card(params: Params, lineage: dict) -> str:
    """A markdown model card: what it was trained on and how, how well it does, what it is not for.

    `lineage["metrics"]` is an evaluation report (eval.json's layout, either the current one or the one
    of versions registered before `tasks.metrics.EvalReport`)."""
    report, training, train = EvalReport.model_validate(lineage["metrics"]), lineage["training"], params.train
    rows = [f"| {name} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | {m.support} |"
            for name, m in sorted(report.groups.items())]
    latency = report.latency
    return scrub_urls("\n".join([  # the card is public (reports bucket): no URL keeps its credentials
        f"# {params.registry.model_name}: {report.title}", "",
        f"Fine-tuned by flowtune; it predicts {report.predicts}. Load it with `flowtune predict --model <this "
        "folder>`, or with transformers (`from_pretrained(<this folder>)`: config.json names its architecture).", "",
        "## Training", "",
        f"- base encoder: `{train.base_model}`; data: `{params.ingest.source}` (train split, after cleaning and "
        f"augmentation with {', '.join(params.augment.methods) or 'none'}), "
        f"{training.get('train_sentences')} {report.units}",
        f"- {training.get('epochs_run')} epochs (best: {training.get('best_epoch')}), batch {train.batch_size}, "
        f"learning rate {train.learning_rate}, on {training.get('device')} in {training.get('train_seconds')} s",
        f"- code: git {lineage['git'].get('commit')}; flow run: {lineage['flow_run'].get('url')}", "",
        "## Evaluation (test split)", "", evaluation_summary(report), "",
        f"| {report.group} | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|", *rows, "",
        *behaviour_lines(report),
        f"Latency at batch 1: p50 {latency.p50_ms if latency else None} ms, p95 {latency.p95_ms if latency else None} "
        f"ms per {report.unit} ({latency.device if latency else None}).", "",
        *variant_lines(lineage.get("compression")),
        "## Gate decision", "", *[f"- {reason}" for reason in lineage["gate"]["reasons"]], "",
        "## Intended use and limits", "",
        *intended_use(report),
    ])) + "\n"


def variant_lines(compression: dict | None) -> list[str]:
    """The card's section on compressed variants: the compress stage's table and how to load one."""
    if not compression:
        return []
    report = CompressionReport.model_validate(compression)
    if not report.rows:  # compress.variants: []
        return []
    published = report.published
    return ["## Compressed variants (CPU)", "",
            f"Published in `variants/`: {', '.join(f'`{name}`' for name in published) or 'none'}. Each was scored on "
            "the same test split and timed beside the fp32 model; the others missed a threshold (`compress:` "
            "params).", "", report.as_markdown(), "",
            "Use one with `flowtune predict --variant NAME` or `flowtune serve --variant NAME`; without flowtune, "
            "`variants/onnx*/model.onnx` runs with onnxruntime and the folder's tokenizer, `variants/int8` loads "
            "with transformers + torch, and `variants/student` (a distilled model with fewer layers) is a plain "
            "transformers folder (docs/tutorials/compression.md).", ""]


def evaluation_summary(report: EvalReport) -> str:
    """One paragraph: the headline score, what it covers, the other scores and the calibration."""
    score = report.headline
    other = ", ".join(f"{key} {format_detail(value)}" for key, value in sorted(report.details.items()))
    calibration = f"; expected calibration error {report.calibration.ece:.4f}" if report.calibration else ""
    also = f" Also: {other}." if other else ""
    return (f"{score.name[:1].upper()}{score.name[1:]} {score.value:.4f} (precision {score.precision:.4f}, recall "
            f"{score.recall:.4f}) on {report.count} {report.units}{calibration}.{also}")


def format_detail(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def behaviour_lines(report: EvalReport) -> list[str]:
    checks = report.behaviour.checks() if report.behaviour else {}
    lines = [f"- {name}: {r.passed}/{r.cases} passed" for name, r in checks.items()]
    return ["Behavioural checks:", *lines, ""] if lines else []


def intended_use(report: EvalReport) -> list[str]:
    return [f"- Predicts the {report.group}s above ({report.predicts}) for short English texts like its training "
            "data (for the default data: tweets). Expect lower scores on other domains, languages or much longer "
            "documents.",
            "- Scores come from a small test split: differences of a few F1 points between versions can be noise.",
            "- Not for decisions about people without human review: errors are uneven across the people and the "
            "kinds of text (names of other origins, sarcasm, irony) the data holds few of."]
