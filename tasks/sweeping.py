"""What the train stage needs of a sweep (flows/orchestration/sweep.py): the study's storage, its pruner, and the hook
that reports each epoch's dev score to the trial and stops the stage when the pruner says so.

A sweep's trial runs the ordinary train stage (`dvc repro` in the trial's checkout); the environment says
which study and trial it belongs to. Without those variables (dvc repro, flowtune run) nothing here runs,
and optuna is imported lazily, only by trials.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.params import SQLITE_REFUSED, PrunerParams

if TYPE_CHECKING:
    import optuna

# Set by the trial flow for the train stage it runs: the storage (journal file or database URL), the study's
# name, and the trial's id in that storage.
STORAGE_ENV = "FLOWTUNE_SWEEP_STORAGE"
STUDY_ENV = "FLOWTUNE_SWEEP_STUDY"
TRIAL_ENV = "FLOWTUNE_SWEEP_TRIAL_ID"
# The cores one trial may use when `sweep.parallel` trials share a machine (tasks.trainer.threads_per_process).
# An environment variable, not a params key: the trial's train stage keeps the DVC identity the best trial's
# test scoring later finds in its dvc.lock.
CORES_ENV = "FLOWTUNE_TRAIN_CORES"


def cores_per_trial(parallel: int) -> int:
    """This machine's cores split among `parallel` trials: more torch threads than cores make every OpenMP
    barrier wait for a descheduled thread (a 2-thread training beside one other busy thread on 2 cores ran at
    a tenth of its speed; docs/BENCHMARKS.md, "Levers")."""
    return max(1, (os.cpu_count() or 1) // parallel)
# The trial's user attribute that records a prune (the stage's exit alone cannot tell it from a crash).
PRUNED_ATTR = "pruned_at_epoch"


class TrialPruned(Exception):
    """The pruner stopped this trial: its dev score so far is not worth more epochs."""


def storage_spec(storage: str | None, state_dir: Path) -> str:
    """The storage a sweep uses: `storage` (a database URL) or, for None, the journal file in `state_dir`."""
    if storage is None:
        return str((state_dir / "sweeps" / "optuna-journal.log").resolve())
    if storage.strip().lower().startswith("sqlite"):
        raise ValueError(SQLITE_REFUSED)
    return storage


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """Optuna storage for `spec`: a database URL (scheme://...), else a journal file at that path.

    The journal file takes concurrent writers from several processes on one machine (a lock file beside it);
    SQLite is refused because it locks up under parallel trials (Optuna's own warning).
    """
    import optuna

    if "://" in spec:
        if spec.lower().startswith("sqlite"):
            raise ValueError(SQLITE_REFUSED)
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def make_pruner(params: PrunerParams) -> optuna.pruners.BasePruner:
    import optuna

    if params.kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=params.n_startup_trials, n_warmup_steps=params.n_warmup_steps)


def epoch_hook(pruner: PrunerParams) -> Callable[[int, float | None], None] | None:
    """For a trial's train stage, `hook(epoch, dev_score)`: reports the score as the trial's value at that
    epoch, and raises TrialPruned when the pruner stops the trial. None outside a sweep."""
    if not all(os.environ.get(name) for name in (STORAGE_ENV, STUDY_ENV, TRIAL_ENV)):
        return None
    import optuna

    study = optuna.load_study(study_name=os.environ[STUDY_ENV], storage=open_storage(os.environ[STORAGE_ENV]),
                              pruner=make_pruner(pruner))
    trial = optuna.trial.Trial(study, int(os.environ[TRIAL_ENV]))

    def hook(epoch: int, score: float | None) -> None:
        if score is None:  # no dev split: nothing to compare (the trial flow fails such a sweep first)
            return
        trial.report(score, step=epoch)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_ATTR, epoch)
            raise TrialPruned(f"pruned by the sweep (study {study.study_name!r}, trial {trial.number}) after epoch "
                              f"{epoch}: dev score {score:.4f} is below the median of the finished trials; no model "
                              "saved")

    return hook
