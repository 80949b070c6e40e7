"""Train step: fine-tune a BERT-style encoder for the configured task kind (NER or text classification).

The training skeleton (tasks/trainer.py, shared with distill) serves every kind. The kind (tasks/kinds/)
brings what differs: reading and checking the rows, the model and its head, encoding rows into examples,
the loss, and the dev score that picks the epoch (strict IOB2 entity F1 for NER, macro-F1 for classifiers).
The loop itself is tasks/engine.py (accumulation, DDP, mixed precision, early stopping, resumable checkpoints). The
best epoch's weights are saved (safetensors + tokenizer) into a temporary sibling folder that is then
renamed into place, so a failed run never leaves a half-written model directory. With
`train.lora.enabled` (any kind) LoRA adapters train on the attention projections and the new head in
full; the adapters are merged before saving, so the output is a plain model that `transformers`
loads as is (`pipeline("token-classification" | "text-classification", ...)`, tasks/evaluate.py).

`train.processes: N` (N > 1) makes the stage relaunch itself under torchrun with N processes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks import sweeping, trainer
from tasks.kinds import model_kind_for
from tasks.kinds.base import TrainingKind
from tasks.params import Params, ParamsError, TrainParams, load_params
from tasks.stage import run_stage
from tasks.trainer import EpochHook, Outputs

__all__ = ["Outputs", "fit", "main", "step"]


def fit(kind: TrainingKind[Any], params: TrainParams, data_dir: Path, outputs: Outputs,
        after_epoch: EpochHook | None = None) -> dict:
    """Fine-tune the kind's model on data_dir (tasks/trainer.py, the default recipe); returns train.json's
    metrics ({} on processes other than the main one)."""
    return trainer.fit(trainer.Recipe(kind, params, after_epoch), Path(data_dir), outputs)


def relaunch_under_torchrun(processes: int, argv: list[str]) -> None:
    """`train.processes: N` from a plain command (dvc repro, the flow): rerun this stage under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "tasks.train", *argv]
    sys.exit(subprocess.run(command, check=False).returncode)


def step(params: Params, _args) -> str:
    paths = params.paths
    data_dir = Path(paths.augmented)
    kind = model_kind_for(params).training(data_dir / "train.jsonl")
    outputs = Outputs(Path(paths.model), Path(paths.train_metrics), Path(paths.train_plots),
                      Path(paths.train_checkpoints))
    # In a sweep's trial (flows/orchestration/sweep.py) each epoch's dev score goes to the study, which may prune the
    # trial.
    metrics = fit(kind, params.train, data_dir, outputs, sweeping.epoch_hook(params.sweep.pruner))
    if not metrics:
        return "done (rank > 0)"
    return f"best epoch {metrics['best_epoch']} {kind.score_name} {metrics.get(kind.score_name)} -> {paths.model}"


def processes_wanted(argv: list[str]) -> int:
    """`train.processes` from the params file named on the command line (1 when it cannot be read:
    run_stage then reports why)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml")
    try:
        return load_params(parser.parse_known_args(argv)[0].params).train.processes
    except ParamsError:
        return 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    wanted = processes_wanted(argv)
    if wanted > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_under_torchrun(wanted, argv)
    run_stage("train", step, argv, user_errors=(sweeping.TrialPruned,))


if __name__ == "__main__":
    main()
