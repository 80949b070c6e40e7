"""The text-classification tutorial's example by hand (docs/tutorials/text-classification.md), on the real
data and the real encoder: in a fresh checkout, the tutorial's `cp params-sentiment.yaml params.yaml &&
.venv/bin/dvc repro && .venv/bin/dvc plots show` (as written, without an activated venv) runs every stage on
the 4,200 VADER tweets with MiniLM; `dvc plots show` draws the confusion matrix; the saved model classifies
text.

Shortened for CI only where it costs time and proves nothing new: one epoch, synonym augmentation
only (back-translation of texts is covered in tests/data), one compressed variant (onnx-int8: the ONNX
export and its quantization on the real classifier; every variant of a classifier is built in
tests/unit/test_compress.py). The flow path of the same example, with the
gate, the registry and `flowtune predict`, is tests/integration/flows/test_text_classification_flow.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from transformers import pipeline

from tests.helpers import clean_env, page_commands, scratch_clone, set_params
from tests.lanes import Background, Job, Lane

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# The tutorial's command, as written (tested here so that the two cannot drift apart).
TUTORIAL = "docs/tutorials/text-classification.md"
BY_HAND = "cp params-sentiment.yaml params.yaml && .venv/bin/dvc repro"
DOCS_COMMAND = next(command for command in page_commands(TUTORIAL, BY_HAND) if command.startswith(BY_HAND))


def start_dvc_repro(workdir: Path) -> Job:
    repo = scratch_clone(workdir)
    set_params(repo, "params-sentiment.yaml", augment={"methods": ["synonym"]}, train={"epochs": 1},
               compress={"variants": ["onnx-int8"]})
    # A new user's shell: no venv activated, so the stages must find the project's interpreter themselves.
    path = os.pathsep.join(p for p in clean_env()["PATH"].split(os.pathsep) if not (Path(p) / "activate").exists())
    env = clean_env(PYTHONPATH=str(repo), PATH=path)
    return Job(repo, ["bash", "-c", DOCS_COMMAND], env, timeout_s=2400)


# Started when the session starts, after the main command's run; these tests run last (tests/lanes.py).
BACKGROUND = Background("dvc-repro", start_dvc_repro)


@pytest.fixture(scope="module")
def reproduced(background_lane: Lane) -> Path:
    finished = background_lane.result(BACKGROUND)
    assert finished.returncode == 0, finished.output[-6000:]
    return finished.repo


def test_every_stage_ran_on_the_real_tweets(reproduced: Path) -> None:
    log = (reproduced / "dvc-repro.log").read_text()
    assert "ingest: 4200 sentences" in log
    for stage in ("validate", "clean", "validate_clean", "augment", "validate_augmented", "train", "evaluate"):
        assert f"Running stage '{stage}'" in log
    contract = json.loads((reproduced / "data/reports/contract_augmented.json").read_text())
    assert contract["success"] and set(contract["classes"]["train"]) == {"negative", "neutral", "positive"}
    status = subprocess.run([".venv/bin/dvc", "status"], cwd=reproduced, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower()


def test_one_epoch_of_minilm_beats_the_majority_class_by_far(reproduced: Path) -> None:
    metrics = json.loads((reproduced / "data/metrics/eval.json").read_text())  # tasks.metrics.EvalReport's layout
    # Always answering "positive" (61% of test) scores macro-F1 0.25; the trained model must be far above.
    assert metrics["headline"] == "macro-F1" and metrics["f1"] == metrics["macro_f1"] > 0.5, metrics
    assert all(scores["f1"] > 0.2 for scores in metrics["groups"].values()), metrics["groups"]
    assert metrics["count"] == 516 and metrics["unit"] == "text" and 0.0 <= metrics["calibration"]["ece"] < 0.25
    print(f"\nVADER tweets, 1 epoch: macro-F1 {metrics['f1']:.4f}, accuracy {metrics['accuracy']:.4f}, "
          f"ECE {metrics['calibration']['ece']:.4f}, per class {json.dumps(metrics['groups'])}")


def test_dvc_plots_show_draws_the_confusion_matrix(reproduced: Path) -> None:
    rows = (reproduced / "data/metrics/confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 517
    shown = subprocess.run([".venv/bin/dvc", "plots", "show", "--json"], cwd=reproduced, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "data/metrics/confusion.csv" in shown.stdout and "confusion" in shown.stdout


def test_the_saved_model_classifies_text_with_transformers(reproduced: Path) -> None:
    classify = pipeline("text-classification", model=str(reproduced / "data/models/candidate"))
    assert classify("I love this, best day ever!")[0]["label"] == "positive"
    assert classify("This is awful, I hate it.")[0]["label"] == "negative"
