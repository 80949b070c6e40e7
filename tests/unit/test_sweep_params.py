"""The `sweep:` section: its schema, the swept keys checked against the params, overrides, storage rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.params import ParamsError, check_sweep_space, load_params, with_overrides
from tasks.sweeping import open_storage, storage_spec

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_sweep(**changes) -> dict:
    return {**RAW, "sweep": {**RAW["sweep"], **changes}}


def load(raw: dict, tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def test_both_params_files_have_a_valid_sweep_section():
    for name in ("params.yaml", "params-sentiment.yaml"):
        raw = yaml.safe_load((ROOT / name).read_text())
        check_sweep_space(raw, name)
        assert load_params(ROOT / name).sweep.space


def test_ranges_are_integers_only_when_both_ends_are(tmp_path: Path):
    space = {"train.epochs": {"low": 1, "high": 4, "log": False},
             "train.learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True},
             "augment.methods": {"choices": ["synonym"]}}
    with pytest.raises(ParamsError, match=r"'augment.methods' is a list: its choices must be lists"):
        load(with_sweep(space=space), tmp_path)
    del space["augment.methods"]
    sweep = load(with_sweep(space=space), tmp_path).sweep
    assert sweep.space["train.epochs"].integers and not sweep.space["train.learning_rate"].integers


@pytest.mark.parametrize(("space", "message"), [
    ({"train.learning_rat": {"low": 1.0e-5, "high": 1.0e-3, "log": True}},
     r"sweep.space: 'train.learning_rat' is not a key of this params file"),
    ({"train.lora.rank": {"choices": [4, 8]}}, r"'train.lora.rank' is not a key"),
    ({"gate.min_f1": {"choices": [0.1]}}, r"'gate.min_f1': only keys of the train and augment sections"),
    ({"train.dropout": {"low": 0.3, "high": 0.1, "log": False}}, r"low \(0.3\) must be below high \(0.1\)"),
    ({"train.dropout": {"low": 0.0, "high": 0.3, "log": True}}, r"log: true needs low > 0"),
    ({}, r"sweep.space: Dictionary should have at least 1 item"),
])
def test_bad_spaces_are_refused_naming_the_key(tmp_path: Path, space: dict, message: str):
    with pytest.raises(ParamsError, match=message):
        load(with_sweep(space=space), tmp_path)


def test_a_list_key_is_swept_by_list_choices_that_optuna_records_by_label(tmp_path: Path):
    import optuna

    from flows.orchestration.sweep import suggest

    choices = [[], ["backtranslation"], ["synonym", "backtranslation"], ["synonym", "name_swap", "backtranslation"]]
    raw = with_sweep(space={"augment.methods": {"choices": choices}, "train.batch_size": {"choices": [8, 16]}})
    check_sweep_space(raw, "params.yaml")  # every choice loads, name_swap included (an NER method)
    sweep = load(raw, tmp_path).sweep
    spec = sweep.space["augment.methods"]
    assert spec.labels() == ["[]", "backtranslation", "synonym+backtranslation", "synonym+name_swap+backtranslation"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []
    for _ in range(12):
        trial = study.ask()
        values = suggest(trial, sweep)
        assert values["augment.methods"] in choices and trial.params["augment.methods"] in spec.labels()
        assert sweep.values_of(trial.params) == values  # what `sweep apply` and the test score write back
        seen.append(tuple(values["augment.methods"]))
    assert len(set(seen)) > 1
    with pytest.raises(ParamsError, match=r"augment.methods.0: Input should be 'synonym', 'name_swap' or"):
        check_sweep_space(with_sweep(space={"augment.methods": {"choices": [["synonyms"]]}}), "params.yaml")
    with pytest.raises(ParamsError, match=r"'train.dropout' is not a single number"):
        load(with_sweep(space={"train.dropout": {"choices": [["x"]]}}), tmp_path)
    with pytest.raises(ParamsError, match=r"choices repeat a value"):
        load(with_sweep(space={"augment.methods": {"choices": [["synonym"], ["synonym"]]}}), tmp_path)


def test_values_outside_a_keys_own_bounds_are_refused_before_any_trial():
    raw = with_sweep(space={"train.dropout": {"low": 0.0, "high": 1.5, "log": False}})
    with pytest.raises(ParamsError, match=r"train.dropout: Input should be less than 1 .*dropout = 1.5"):
        check_sweep_space(raw, "params.yaml")
    raw = with_sweep(space={"train.epochs": {"choices": [2, 2.5]}})
    with pytest.raises(ParamsError, match=r"train.epochs: .*integer.*\(sweep.space.train.epochs = 2.5\)"):
        check_sweep_space(raw, "params.yaml")


def test_overrides_set_nested_keys_and_leave_the_original_alone():
    changed = with_overrides(RAW, {"train.learning_rate": 1e-3, "augment.synonym.swap_prob": 0.5})
    assert changed["train"]["learning_rate"] == 1e-3 and changed["augment"]["synonym"]["swap_prob"] == 0.5
    assert RAW["train"]["learning_rate"] == 2.0e-4 and changed["train"]["epochs"] == RAW["train"]["epochs"]


@pytest.mark.parametrize("url", ["sqlite:///sweeps.db", "SQLite:////tmp/x.db"])
def test_sqlite_storage_is_refused_with_the_reason(tmp_path: Path, url: str):
    with pytest.raises(ParamsError, match="SQLite is refused: Optuna's docs warn that it locks up under parallel"):
        load(with_sweep(storage=url), tmp_path)
    with pytest.raises(ValueError, match="SQLite is refused"):
        storage_spec(url, tmp_path)
    with pytest.raises(ValueError, match="SQLite is refused"):
        open_storage(url)


def test_the_default_storage_is_a_journal_file_in_the_state_folder(tmp_path: Path):
    import optuna

    spec = storage_spec(None, tmp_path / ".flowtune")
    assert spec == str(tmp_path / ".flowtune" / "sweeps" / "optuna-journal.log")
    study = optuna.create_study(study_name="s", storage=open_storage(spec), direction="maximize")
    study.enqueue_trial({"x": 1})
    again = optuna.load_study(study_name="s", storage=open_storage(spec))  # another process would see the same
    assert len(again.trials) == 1 and Path(spec).is_file()


def test_the_train_hook_reports_each_epoch_and_prunes_a_bad_trial(tmp_path: Path, monkeypatch):
    import optuna

    from tasks import sweeping
    from tasks.params import PrunerParams

    pruner = PrunerParams(kind="median", n_startup_trials=1, n_warmup_steps=0)
    assert sweeping.epoch_hook(pruner) is None  # outside a sweep: nothing to report to
    spec = storage_spec(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(spec), direction="maximize")
    good = study.ask()
    for epoch, score in enumerate([0.5, 0.7], start=1):
        good.report(score, epoch)
    study.tell(good, 0.7)
    bad = study.ask()
    monkeypatch.setenv(sweeping.STORAGE_ENV, spec)
    monkeypatch.setenv(sweeping.STUDY_ENV, "s")
    monkeypatch.setenv(sweeping.TRIAL_ENV, str(bad._trial_id))
    hook = sweeping.epoch_hook(pruner)
    with pytest.raises(sweeping.TrialPruned, match=r"trial 1\) after epoch 1: dev score 0.0100"):
        hook(1, 0.01)
    (recorded,) = [t for t in optuna.load_study(study_name="s", storage=open_storage(spec)).trials if t.number == 1]
    assert recorded.intermediate_values == {1: 0.01} and recorded.user_attrs[sweeping.PRUNED_ATTR] == 1


def test_apply_edits_only_the_swept_lines_and_keeps_comments():
    from flows.cli.sweep import set_scalars

    text = (ROOT / "params.yaml").read_text()
    best = {"train.learning_rate": 1.0e-7, "train.batch_size": 32, "augment.synonym.swap_prob": 0.25,
            "train.lora.r": 16, "augment.backtranslation.engine": "marian",
            "augment.methods": ["backtranslation", "name_swap"]}
    edited = set_scalars(text, best)
    changed = [(old, new) for old, new in zip(text.splitlines(), edited.splitlines(), strict=True) if old != new]
    assert len(changed) == len(best)
    # the comment keeps its column
    assert ("  batch_size: 16                 # sentences per process per micro-batch",
            "  batch_size: 32                 # sentences per process per micro-batch") in changed
    assert ("  learning_rate: 2.0e-4", "  learning_rate: 1.0e-07") in changed
    assert ("    r: 8", "    r: 16") in changed  # train.lora.r, not evaluate's or another section's `r`
    assert ("  methods: [synonym, backtranslation]", "  methods: [backtranslation, name_swap]") in changed
    loaded = yaml.safe_load(edited)
    assert loaded["augment"]["backtranslation"]["engine"] == "marian" and loaded["evaluate"] == RAW["evaluate"]


def test_apply_refuses_a_key_it_cannot_find_as_a_line():
    from flows.cli.sweep import set_scalars

    with pytest.raises(ValueError, match=r"train.nope: no `nope:` line under train"):
        set_scalars((ROOT / "params.yaml").read_text(), {"train.nope": 1})
    with pytest.raises(ValueError, match=r"no `dropout:` line under train"):  # a flow-style mapping is not edited
        set_scalars("train: {dropout: 0.1}\n", {"train.dropout": 0.2})


def test_parallel_trials_split_the_cores_and_each_training_takes_its_share(monkeypatch, tmp_path) -> None:
    # Two 4-thread trainings on 8 cores, not two 8-thread ones: more threads than cores stall OpenMP barriers.
    from tasks import engine
    from tasks.sweeping import CORES_ENV, cores_per_trial
    from tasks.trainer import threads_per_process
    from tests.helpers import train_params

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [cores_per_trial(parallel) for parallel in (1, 2, 3, 16)] == [8, 4, 2, 1]
    alone, two_processes = engine.Processes(), engine.Processes(rank=0, world=2, local_world=2)
    params = train_params(tmp_path, num_threads=0)  # 0: the cores decide
    assert threads_per_process(params, alone) == 8
    monkeypatch.setenv(CORES_ENV, str(cores_per_trial(2)))
    assert threads_per_process(params, alone) == 4
    assert threads_per_process(params, two_processes) == 2  # the trial's share, split among its processes
    assert threads_per_process(train_params(tmp_path, num_threads=3), alone) == 3  # an explicit count wins
