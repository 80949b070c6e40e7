"""`flowtune sweep`: hyperparameter search as a Prefect flow on Optuna (docs/DECISIONS.md 45).

The search (`sweep`) works in an isolated checkout of a commit: it builds the data stages once (the trials
then find them in the shared DVC cache and run cache), opens the Optuna study named by `sweep.study`, and
keeps up to `sweep.parallel` trials running until the study holds `sweep.n_trials` finished ones. Each trial
is a run of the `flowtune-sweep-trial/sweep-trial` deployment on the work pool (so it spreads over every
worker), or with `local=True` a subprocess flow run on this machine. A trial (`sweep_trial`) works in a
checkout of its own with its sampled values written into that checkout's params.yaml, runs the stages up to
train (no evaluation, gate or registration), and tells the study its dev score; the train stage reports
each epoch's score and the pruner may stop it (tasks/sweeping.py), which the trial records as PRUNED.

The study lives in Optuna storage (a journal file under the state folder, or a database URL), so a
stopped sweep continues where it was when started again with the same study name. At the end the test
split is scored once, for the best trial, and the results are published: a table artifact and HTML plots
in the reports bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.names import SWEEP_FLOW, SWEEP_TRIAL_DEPLOYMENT, SWEEP_TRIAL_FLOW
from flows.orchestration import reports
from flows.orchestration.pipeline import reproduce, working_copy
from flows.orchestration.steps import DATA_STAGES, StageError, dvc_pull, dvc_push, repro_stage, run_logger, run_settings
from flows.orchestration.workspace import DEFAULT_PARAMS, resolve_revision, run_workspace
from tasks import sweeping
from tasks.params import (
    Params,
    SearchRange,
    SweepParams,
    check_sweep_space,
    load_params,
    parse_params,
    with_overrides,
)
from tasks.settings import Settings

if TYPE_CHECKING:
    import optuna

POLL_S = 3.0  # how often running trials are looked at
# Trial user attributes: the flow run that ran it, and the dvc.lock of its checkout (which names the
# trained model in the DVC cache/remote: the best trial's model is scored on test from it).
FLOW_RUN_ATTR, LOCK_ATTR = "flow_run_id", "dvc_lock"
INTERRUPTED_ATTR = "interrupted"  # a trial left running by a sweep that died: failed, and not counted


def open_study(sweep: SweepParams, settings: Settings) -> optuna.Study:
    """The sweep's study, created on first use and continued afterwards (same name, same storage)."""
    import optuna

    sampler = (optuna.samplers.TPESampler(seed=sweep.seed) if sweep.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=sweep.seed))
    storage = sweeping.open_storage(sweeping.storage_spec(sweep.storage, settings.state_dir))
    return optuna.create_study(study_name=sweep.study, storage=storage, direction=sweep.direction, sampler=sampler,
                               pruner=sweeping.make_pruner(sweep.pruner), load_if_exists=True)


def suggest(trial: optuna.Trial, sweep: SweepParams) -> dict[str, Any]:
    """The trial's values for every key of the search space (recorded in the study as the trial's params)."""
    values = {}
    for key, spec in sweep.space.items():
        if not isinstance(spec, SearchRange):
            values[key] = spec.value_of(trial.suggest_categorical(key, spec.labels()))
        elif spec.integers:
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            values[key] = trial.suggest_float(key, float(spec.low), float(spec.high), log=spec.log)
    return values


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A finished trial that counts towards `n_trials` (not one a dead sweep left behind)."""
    return trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED_ATTR)


def fail_interrupted(study: optuna.Study) -> list[int]:
    """Trials still RUNNING when a sweep starts belong to a sweep that died: fail them (they run again)."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    return [t.number for t in stale]


# --- one trial -------------------------------------------------------------------------------------------


@flow(name=SWEEP_TRIAL_FLOW, log_prints=True)
def sweep_trial(study: str, trial_id: int, trial_number: int, overrides: dict[str, Any], revision: str,
                dvc_lock: str, params_file: str = DEFAULT_PARAMS, data_source: str | None = None) -> dict:
    """One trial of the sweep's `study`: the stages up to train in a checkout of `revision` whose params file
    has `overrides` applied; tells the study the dev score, or PRUNED when the pruner stopped training.

    `dvc_lock` is the sweep's, after it built the data: the data stages are then up to date here (their
    outputs come from the DVC cache or remote), unless the trial's values change them (swept augment keys).
    """
    settings = run_settings()
    run_id = str(flow_run.get_id() or "local")
    with run_workspace("isolated", run_id, settings, revision=revision, params_file=params_file,
                       data_source=data_source):
        params = apply_overrides(Path(DEFAULT_PARAMS), overrides)
        Path("dvc.lock").write_text(dvc_lock)
        spec = sweeping.storage_spec(params.sweep.storage, settings.state_dir)
        found = load_trial_study(study, spec)
        found._storage.set_trial_user_attr(trial_id, FLOW_RUN_ATTR, run_id)
        # The train stage (a `dvc repro` child process) reads these to report to this trial.
        os.environ.update({sweeping.STORAGE_ENV: spec, sweeping.STUDY_ENV: study, sweeping.TRIAL_ENV: str(trial_id),
                           sweeping.CORES_ENV: str(sweeping.cores_per_trial(params.sweep.parallel))})
        reproduce(DATA_STAGES, params, settings)
        try:
            repro_stage("train", params, settings)
        except StageError:
            if sweeping.PRUNED_ATTR not in found._storage.get_trial(trial_id).user_attrs:
                raise  # a real failure: the sweep records the trial as failed
            return tell_pruned(found, trial_number)
        score = json.loads(Path(params.paths.train_metrics).read_text())["dev_f1"]
        if score is None:
            raise ValueError("a sweep needs a dev split to score trials (ingest.dev_fraction > 0)")
        dvc_push()  # the model, for the best trial's test score (the sweep may run on another machine)
        found._storage.set_trial_user_attr(trial_id, LOCK_ATTR, Path("dvc.lock").read_text())
        found.tell(trial_number, score, skip_if_finished=True)
    get_run_logger().info("trial %d: dev score %.4f with %s", trial_number, score, overrides)
    return {"trial": trial_number, "state": "COMPLETE", "dev_score": score}


def apply_overrides(path: Path, overrides: dict[str, Any]) -> Params:
    """Write the trial's values into the checkout's params file (its own copy); the params they make."""
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(with_overrides(raw, overrides), sort_keys=False))
    return load_params(path)


def load_trial_study(name: str, spec: str) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=name, storage=sweeping.open_storage(spec))


def tell_pruned(study: optuna.Study, number: int) -> dict:
    from optuna.trial import TrialState

    study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    get_run_logger().info("trial %d pruned: the median rule stopped its training", number)
    return {"trial": number, "state": "PRUNED", "dev_score": None}


# --- running trials -----------------------------------------------------------------------------------------


@dataclass
class Running:
    number: int
    handle: Any  # a flow run id (work pool) or a Popen (local)


@dataclass
class DeploymentTrials:
    """Trials as runs of the trial deployment on the work pool: every worker of that pool takes some."""

    client: Any = None
    started: list[str] = field(default_factory=list)

    def __enter__(self) -> DeploymentTrials:
        from prefect.client.orchestration import get_client

        from flows.orchestration.remote_train import require_polling_worker

        self.client = get_client(sync_client=True).__enter__()
        try:
            require_polling_worker(self.client, SWEEP_TRIAL_DEPLOYMENT, what="sweep trials")
        except StageError as exc:
            self.client.__exit__(None, None, None)
            raise StageError(f"{exc} Or run the trials on this machine: `flowtune sweep --local`.") from None
        return self

    def __exit__(self, *exc) -> None:
        self.client.__exit__(*exc)

    def start(self, parameters: dict) -> str:
        from prefect.deployments import run_deployment

        run = run_deployment(SWEEP_TRIAL_DEPLOYMENT, parameters=parameters, timeout=0)
        return str(run.id)

    def ended(self, handle: str) -> str | None:
        """None while the run is going; its final state's name afterwards."""
        state = self.client.read_flow_run(handle).state
        return state.name if state and state.is_final() else None

    def cancel(self, handle: str) -> None:
        from flows.orchestration.remote_train import cancel

        cancel(self.client, self.client.read_flow_run(handle))


@dataclass
class LocalTrials:
    """Trials as subprocess flow runs on this machine (`flowtune sweep --local`: no worker needed)."""

    repo: Path

    def __enter__(self) -> LocalTrials:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, parameters: dict) -> subprocess.Popen:
        # From the user's checkout, as a worker would run it: the trial clones that repository.
        trial = [sys.executable, "-m", "flows.orchestration.sweep", "trial", json.dumps(parameters)]
        return subprocess.Popen(trial, cwd=self.repo)

    def ended(self, handle: subprocess.Popen) -> str | None:
        code = handle.poll()
        return None if code is None else ("Completed" if code == 0 else f"Failed (exit {code})")

    def cancel(self, handle: subprocess.Popen) -> None:
        handle.terminate()
        handle.wait()


def run_trials(study: optuna.Study, sweep: SweepParams, trials, base: dict) -> int:
    """Keep up to `sweep.parallel` trials running until the study holds `sweep.n_trials` finished ones;
    the number of trials this call started."""
    logger = run_logger()
    running: list[Running] = []
    started = 0
    try:
        while True:
            running = [r for r in running if not finished(study, r, trials, logger)]
            done = sum(counted(t) for t in study.get_trials(deepcopy=False))
            if done + len(running) >= sweep.n_trials and not running:
                return started
            while len(running) < sweep.parallel and done + len(running) < sweep.n_trials:
                trial = study.ask()
                parameters = {**base, "trial_id": trial._trial_id, "trial_number": trial.number,
                              "overrides": suggest(trial, sweep)}
                running.append(Running(trial.number, trials.start(parameters)))
                started += 1
                logger.info("trial %d started: %s", trial.number, parameters["overrides"])
            time.sleep(POLL_S)
    except BaseException:  # a cancelled or failed sweep stops its trials: nothing trains for a gone search
        for run in running:
            trials.cancel(run.handle)
        raise


def finished(study: optuna.Study, run: Running, trials, logger) -> bool:
    """Whether `run` has ended; a trial whose run ended without telling the study is failed there."""
    from optuna.trial import TrialState

    ended = trials.ended(run.handle)
    if ended is None:
        return False
    (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == run.number]
    if trial.state == TrialState.RUNNING:
        study.tell(run.number, state=TrialState.FAIL, skip_if_finished=True)
        logger.warning("trial %d failed: its flow run ended %s without a dev score", run.number, ended)
    else:
        logger.info("trial %d: %s (%s)", run.number, trial.state.name, trial.value)
    return True


# --- results ------------------------------------------------------------------------------------------------


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: number, state, sampled values, dev score, flow run."""
    return [{"trial": t.number, "state": t.state.name, **{k: t.params.get(k) for k in sorted(t.params)},
             "dev score": None if t.value is None else round(t.value, 4),
             "flow run": t.user_attrs.get(FLOW_RUN_ATTR, "")}
            for t in study.get_trials(deepcopy=False)]


def plots(study: optuna.Study) -> dict[str, str]:
    """HTML pages (plotly, self-contained: they open without the internet) of the optimisation history and
    of the parameters' importance; importance needs two completed trials, else it is left out."""
    from optuna import visualization

    pages = {"optimization-history": visualization.plot_optimization_history(study)}
    try:
        pages["param-importances"] = visualization.plot_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        get_run_logger().warning("no parameter-importance plot: %s", exc)
    return {name: figure.to_html(include_plotlyjs=True, full_html=True) for name, figure in pages.items()}


@task(name="publish-sweep", task_run_name="publish-sweep", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5])
def publish_results(study: optuna.Study, settings: Settings, run_id: str) -> dict[str, str]:
    """The trials' table artifact and the plots in the reports bucket (linked from the flow run)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key="sweep-trials", table=trial_rows(study),
                          description=f"Optuna study {study.study_name!r}: every trial, its values and dev score")
    return reports.publish_sweep_plots(settings, study.study_name, run_id, plots(study))


@task(name="test-best-trial", task_run_name="test-best-trial", cache_policy=NO_CACHE)
def score_best_on_test(study: optuna.Study, raw: dict, settings: Settings) -> dict:
    """Score the best trial's model on test, once: its params and dvc.lock into this checkout, its model from
    the DVC cache or remote, then the evaluate stage. The result is the sweep's only test score."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.metrics import EvalReport

    best = study.best_trial
    values = parse_params(raw, DEFAULT_PARAMS).sweep.values_of(best.params)
    Path(DEFAULT_PARAMS).write_text(yaml.safe_dump(with_overrides(raw, values), sort_keys=False))
    Path("dvc.lock").write_text(best.user_attrs[LOCK_ATTR])
    params = load_params(DEFAULT_PARAMS)
    dvc_pull()
    repro_stage("evaluate", params, settings)
    score = EvalReport.read(Path(params.paths.eval_metrics)).headline
    summary = {"trial": best.number, "params": best.params, "dev_score": best.value, "test_name": score.name,
               "test_score": score.value}
    study.set_user_attr("best_test", summary)
    lines = [f"# Best trial of `{study.study_name}`: #{best.number}", "",
             f"- dev score (the objective): {best.value:.4f}",
             f"- test {score.name}: **{score.value:.4f}** (scored once, for this trial only, after the search)",
             *[f"- `{key}`: {value}" for key, value in best.params.items()], "",
             "`flowtune sweep apply` writes these values into the params file."]
    create_markdown_artifact(key="sweep-best", markdown="\n".join(lines), description="The sweep's best trial")
    return summary


@flow(name=SWEEP_FLOW, log_prints=True)
def sweep(revision: str = "HEAD", params_file: str = DEFAULT_PARAMS, data_source: str | None = None,
          local: bool = False) -> dict:
    """Search the params file's `sweep.space` with Optuna, one trial per flow run (see the module's doc);
    the best trial, its dev and test scores, and the plots' URLs."""
    repo = Path.cwd()
    commit = resolve_revision(repo, revision)
    # The trials' launcher first: a missing worker or deployment fails the sweep before any data is built.
    with (LocalTrials(repo) if local else DeploymentTrials()) as trials, \
            working_copy("isolated", commit, params_file, data_source) as (settings, params):
        raw = yaml.safe_load(Path(DEFAULT_PARAMS).read_text())
        check_sweep_space(raw, params_file)
        reproduce(DATA_STAGES, params, settings)  # once: the trials then find the data in the DVC cache
        dvc_push()  # and workers on other machines in the remote
        study = open_study(params.sweep, settings)
        if interrupted := fail_interrupted(study):
            get_run_logger().warning("trials %s were left running by an earlier sweep: failed, they run again",
                                     interrupted)
        base = {"study": params.sweep.study, "revision": commit, "params_file": params_file,
                "data_source": data_source, "dvc_lock": Path("dvc.lock").read_text()}
        run_trials(study, params.sweep, trials, base)
        links = publish_results(study, settings, str(flow_run.get_id() or "local"))
        completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not completed:
            raise StageError(f"sweep {params.sweep.study!r}: no trial completed (see the trials' flow runs)")
        best = score_best_on_test(study, raw, settings)
    return {"study": params.sweep.study, "best": best, "plots": links}


def main(argv: list[str]) -> int:
    """`python -m flows.orchestration.sweep trial <json parameters>`: one trial as a flow run of this process
    (local mode)."""
    if argv[:1] != ["trial"] or len(argv) != 2:
        print("usage: python -m flows.orchestration.sweep trial '<json parameters>'", file=sys.stderr)
        return 2
    state = sweep_trial(**json.loads(argv[1]), return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
