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

from flows.gate import Decision, is_classifier, per_group
from tasks.params import Params
from tasks.settings import Settings


def git_state() -> dict:
    """The commit the code came from and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


def build_lineage(params: Params, decision: Decision, settings: Settings) -> dict:
    """Lineage for the registry: code, data and params hashes, metrics, gate and flow run. No secrets."""
    run_id = flow_run.get_id()
    lock_path = Path("dvc.lock")
    return {
        "git": git_state(),
        "dvc_lock": yaml.safe_load(lock_path.read_text()) if lock_path.exists() else None,
        "params": params.model_dump(by_alias=True),
        "metrics": json.loads(Path(params.paths.eval_metrics).read_text()),
        "training": json.loads(Path(params.paths.train_metrics).read_text()),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
        "flow_run": {"id": str(run_id) if run_id else None,
                     "url": f"{settings.ui_url}/runs/flow-run/{run_id}" if run_id else None},
        "registered_at": datetime.now(UTC).isoformat(),
    }


@contextlib.contextmanager
def staged_model_dir(params: Params, lineage: dict) -> Iterator[Path]:
    """A temporary copy of the candidate with eval.json and lineage.json beside the weights."""
    with tempfile.TemporaryDirectory(prefix="flowtune-register-") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(params.paths.model, staged)
        shutil.copyfile(params.paths.eval_metrics, staged / "eval.json")
        (staged / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
        (staged / "README.md").write_text(model_card(params, lineage), encoding="utf-8")
        yield staged


def model_card(params: Params, lineage: dict) -> str:
    """A markdown model card: what it was trained on and how, how well it does, what it is not for."""
    metrics, training, train = lineage["metrics"], lineage["training"], params.train
    classifier = is_classifier(metrics)
    kind = "class" if classifier else "entity"
    rows = [f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
            for name, m in sorted(per_group(metrics).items())]
    latency = metrics.get("latency", {})
    return "\n".join([
        *card_title(params, classifier, bool(metrics.get("multi_label"))), "",
        "## Training", "",
        f"- base encoder: `{train.base_model}`; data: `{params.ingest.source}` (train split, after cleaning and "
        f"augmentation with {', '.join(params.augment.methods) or 'none'}), "
        f"{training.get('train_sentences')} {'texts' if classifier else 'sentences'}",
        f"- {training.get('epochs_run')} epochs (best: {training.get('best_epoch')}), batch {train.batch_size}, "
        f"learning rate {train.learning_rate}, on {training.get('device')} in {training.get('train_seconds')} s",
        f"- code: git {lineage['git'].get('commit')}; flow run: {lineage['flow_run'].get('url')}", "",
        *(classifier_summary(metrics) if classifier else ner_summary(metrics)), "",
        f"| {kind} | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|", *rows, "",
        *behaviour_lines(metrics),
        f"Latency at batch 1: p50 {latency.get('p50_ms')} ms, p95 {latency.get('p95_ms')} ms per "
        f"{'text' if classifier else 'sentence'} ({latency.get('device')}).", "",
        "## Gate decision", "", *[f"- {reason}" for reason in lineage["gate"]["reasons"]], "",
        "## Intended use and limits", "",
        *intended_use(classifier),
    ]) + "\n"


def card_title(params: Params, classifier: bool, multi_label: bool = False) -> list[str]:
    if classifier:
        kind = "any number of classes per text, each predicted at probability >= 0.5" if multi_label else \
            "one class per text"
        return [f"# {params.registry.model_name}: text classification", "",
                f"Sequence classification ({kind}) fine-tuned by flowtune; load it with "
                "`transformers.pipeline(\"text-classification\", model=<this folder>)` or `flowtune predict`."]
    return [f"# {params.registry.model_name}: named-entity recognition", "",
            "Token classification (IOB2 tags) fine-tuned by flowtune; load it with "
            "`transformers.pipeline(\"token-classification\", model=<this folder>)`."]


def ner_summary(metrics: dict) -> list[str]:
    return ["## Evaluation (test split, seqeval strict IOB2)", "",
            f"Entity F1 {metrics['f1']:.4f} (precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}) "
            f"on {metrics['sentences']} sentences; conlleval-style F1 {metrics.get('f1_default', float('nan')):.4f}."]


def classifier_summary(metrics: dict) -> list[str]:
    return ["## Evaluation (test split)", "",
            f"Macro-F1 {metrics['f1']:.4f} (precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}), "
            f"{'exact-match ' if metrics.get('multi_label') else ''}accuracy {metrics['accuracy']:.4f} on "
            f"{metrics['examples']} texts; expected calibration error "
            f"{metrics['ece']:.4f}."]


def behaviour_lines(metrics: dict) -> list[str]:
    checks = [f"- {name}: {r['passed']}/{r['cases']} passed" for name, r in metrics.get("behaviour", {}).items()]
    return ["Behavioural checks:", *checks, ""] if checks else []


def intended_use(classifier: bool) -> list[str]:
    if classifier:
        return ["- Labels short English texts like its training data (for the default data: tweets) with the classes "
                "above. Expect lower scores on other domains, languages or long documents.",
                "- Scores come from a small test split: differences of a few F1 points between versions can be noise.",
                "- Sentiment of sarcasm, irony and mixed statements is often wrong; do not use it alone for decisions "
                "about people."]
    return ["- Tags the entity types above in short English texts like its training data (for the default data: "
            "tweets). Expect lower scores on other domains, languages or much longer documents.",
            "- Scores come from a small test split: differences of a few F1 points between versions can be noise.",
            "- Not for decisions about people without human review: names and places are recognised imperfectly, "
            "and unevenly across name origins."]
