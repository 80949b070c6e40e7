"""The sweep's trial loop with a fake launcher (trials tell the study at once): `parallel` bounds the trials
in flight, `n_trials` counts finished ones, and a restarted sweep continues its study."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.orchestration.sweep import counted, fail_interrupted, open_study, run_trials
from tasks.params import SweepParams
from tasks.settings import Settings


def sweep_params(**changes) -> SweepParams:
    values = {"study": "s", "n_trials": 5, "parallel": 2, "direction": "maximize", "sampler": "random", "seed": 1,
              "pruner": {"kind": "none", "n_startup_trials": 0, "n_warmup_steps": 0}, "storage": None,
              "space": {"train.learning_rate": {"low": 1.0e-5, "high": 1.0e-2, "log": True},
                        "train.epochs": {"low": 1, "high": 3, "log": False}}}
    return SweepParams(**{**values, **changes})


class FakeTrials:
    """Each trial 'runs' for two polls, then tells the study a score (or fails without telling)."""

    def __init__(self, study, fail: set[int] = frozenset()):
        self.study, self.fail, self.polls, self.in_flight, self.most = study, fail, {}, 0, 0
        self.parameters: dict[int, dict] = {}

    def start(self, parameters: dict) -> int:
        self.parameters[parameters["trial_number"]] = parameters
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.polls[parameters["trial_number"]] = 0
        return parameters["trial_number"]

    def ended(self, number: int) -> str | None:
        self.polls[number] += 1
        if self.polls[number] < 2:
            return None
        self.in_flight -= 1
        if number in self.fail:
            return "Crashed"
        self.study.tell(number, self.parameters[number]["overrides"]["train.learning_rate"])
        return "Completed"

    def cancel(self, number: int) -> None:
        pass


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    monkeypatch.setattr("flows.orchestration.sweep.POLL_S", 0)


def test_trials_run_at_most_parallel_at_once_until_n_trials_finished(tmp_path: Path):
    sweep = sweep_params()
    study = open_study(sweep, Settings(_env_file=None, state_dir=tmp_path))
    fake = FakeTrials(study, fail={1})
    assert run_trials(study, sweep, fake, {"study": "s"}) == 5
    assert fake.most == 2 and fake.in_flight == 0
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states[1] == "FAIL"  # ended without telling: failed by the sweep
    assert all(isinstance(p["overrides"]["train.epochs"], int) and 1e-5 <= p["overrides"]["train.learning_rate"]
               <= 1e-2 for p in fake.parameters.values())


def test_a_restarted_sweep_continues_its_study(tmp_path: Path):
    sweep = sweep_params(n_trials=3)
    settings = Settings(_env_file=None, state_dir=tmp_path)
    study = open_study(sweep, settings)
    run_trials(study, sweep.model_copy(update={"n_trials": 2}), FakeTrials(study), {})  # stopped after 2
    study.ask()  # a trial the stopped sweep left RUNNING
    again = open_study(sweep, settings)  # the same name: the same study, read back from the journal
    assert fail_interrupted(again) == [2]
    assert run_trials(again, sweep, FakeTrials(again), {}) == 1  # only what is missing
    assert [t.state.name for t in again.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert sum(counted(t) for t in again.trials) == 3
    assert run_trials(again, sweep, FakeTrials(again), {}) == 0  # done: nothing more to run
