"""The orchestration rules of `flows.orchestration.pipeline.training_pipeline`, in seconds.

The flow, its tasks, the gate and the registration steps run for real on a test Prefect server
(tests/flows/conftest.py); only what has side effects is faked: every command the flow runs
(`flows.orchestration.steps.run_logged`: each stage's `dvc repro`, `dvc pull`, `dvc push`, the champion's scoring),
`dvc status`, the storage check, the stage reports, the remote train run and the model registry.
A fake stage writes what the flow reads next (the model folder, data/metrics/*.json, the contract
report) into a scratch working copy. Real stages, DVC and storage: tests/integration/flows/.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.states import Completed

import flows.orchestration.champion
import flows.orchestration.pipeline
import flows.orchestration.remote_train
import flows.orchestration.reports
import flows.orchestration.steps
from flows.names import TRAIN_STAGE_FLOW
from flows.orchestration.pipeline import training_pipeline
from flows.orchestration.steps import STAGES, StageError
from flows.registry import ANY, AliasConflict, directory_digest
from tasks.metrics import Behaviour, EvalReport, Headline, Latency
from tasks.params import load_params

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = load_params(ROOT / "params.yaml").registry.model_name


def write_model(folder: Path, weights: bytes) -> Path:
    """A model folder as the train stage leaves it; its content digest depends on `weights` only."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def write_report(path: Path, f1: float) -> None:
    """An evaluate stage's report (eval.json) with this headline score, measured latency and behaviour (every
    case passed), no per-group scores."""
    passed = {"cases": 10, "passed": 10, "pass_rate": 1.0}
    EvalReport(task="token-classification", title="named-entity recognition", predicts="IOB2 entity tags, one per word",
               unit="sentence", count=40,
               headline=Headline(name="strict entity F1", value=f1, precision=f1, recall=f1),
               group="entity type", groups={}, latency=Latency(p50_ms=1.0, p95_ms=2.0, device="cpu"),
               behaviour=Behaviour(name_invariance=passed, minimum_functionality=passed)).write(path)


class FakeCommands:
    """Stands in for every command the flow runs (`run_logged`); records them in order.

    A stage writes what the flow reads next; `fail` names a stage that fails as a real one does
    (StageError), after writing its report, as a failed data contract does.
    """

    def __init__(self, weights: bytes = b"candidate", f1: float = 0.6, champion_f1: float = 0.5,
                 fail: str | None = None):
        self.weights, self.f1, self.champion_f1, self.fail = weights, f1, champion_f1, fail
        self.log: list[str] = []
        self.limits: dict[str, float | None] = {}  # what -> the time limit it ran under
        self.params = load_params("params.yaml")

    @property
    def stages(self) -> list[str]:
        """The stages reproduced in this working copy, in order."""
        return [entry.removeprefix("dvc repro --single-item ") for entry in self.log
                if entry.startswith("dvc repro")]

    def __call__(self, command: list[str], what: str) -> None:
        if "tasks.evaluate" in command:  # the champion, scored by the candidate's code
            self.log.append("score champion")
            write_report(Path(command[command.index("--out") + 1]), self.champion_f1)
            return
        self.log.append(" ".join(command))
        if command[:3] == ["dvc", "repro", "--single-item"]:
            self.stage(command[3])
        elif command == ["dvc", "pull", "train"]:  # the remote train run's model, pulled back
            self.train()

    def stage(self, stage: str) -> None:
        paths = self.params.paths
        if stage == "validate":
            Path(paths.contract_raw).parent.mkdir(parents=True, exist_ok=True)
            Path(paths.contract_raw).write_text(json.dumps({"success": stage != self.fail}))
        if stage == self.fail:
            raise StageError(f"stage {stage!r} failed (exit 1):\ndata contract failed: 3 rows break iob2_valid")
        if stage == "train":
            self.train()
        elif stage == "evaluate":
            write_report(Path(paths.eval_metrics), self.f1)

    def train(self) -> None:
        paths = self.params.paths
        write_model(Path(paths.model), self.weights)
        Path(paths.train_metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(paths.train_metrics).write_text(json.dumps({"epochs_run": 1, "best_epoch": 1, "train_sentences": 40}))


class FakeRegistry:
    """In memory, the `flows.registry.Registry` methods the flow calls, with their signatures and rules
    (a version per distinct weights, compare-and-swap alias moves); records publishes and alias moves."""

    bucket = "fake-registry"
    prefix = "models"

    def __init__(self, store: Path):
        self.store = store
        self.models: dict[int, Path] = {}
        self.alias_of: dict[str, int] = {}
        self.published: list[dict] = []
        self.moves: list[tuple[str, int, object]] = []

    def add(self, weights: bytes, alias: str | None = "champion") -> int:
        """A version an earlier run registered (by default the champion)."""
        version = len(self.models) + 1
        self.models[version] = write_model(self.store / str(version), weights)
        if alias:
            self.alias_of[alias] = version
        return version

    def find_digest(self, name: str, digest: str) -> int | None:
        found = [v for v, folder in self.models.items() if directory_digest(folder) == digest]
        return max(found) if found else None

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.alias_of.get(alias)

    def manifest(self, name: str, version: int) -> dict:
        """A version added by `add` records no lineage: the gate scores it again."""
        return next((p for p in self.published if p["version"] == version), {"metadata": {}})

    def download(self, name: str, version: int, dest: Path) -> Path:
        shutil.copytree(self.models[version], dest)
        return Path(dest)

    def publish(self, name: str, model_dir: Path, metadata: dict, run_id: str | None = None) -> int:
        existing = self.find_digest(name, directory_digest(model_dir))
        if existing is not None:
            return existing
        version = len(self.models) + 1
        self.models[version] = Path(shutil.copytree(model_dir, self.store / str(version)))
        self.published.append({"name": name, "version": version, "metadata": metadata, "run_id": run_id,
                               "files": sorted(p.name for p in Path(model_dir).iterdir())})
        return version

    def set_alias(self, name: str, alias: str, version: int, expected: int | None | object = ANY) -> None:
        now = self.alias_of.get(alias)
        if expected is not ANY and now != expected:
            raise AliasConflict(f"{alias} points at {now}, not {expected}")
        self.moves.append((alias, version, expected))
        self.alias_of[alias] = version


@pytest.fixture()
def world(tmp_path, monkeypatch) -> SimpleNamespace:
    """A scratch working copy (the current directory) with the repository's params.yaml, the fakes in
    place; `world.commands` may be replaced by a test before it runs the flow."""
    for key in [k for k in os.environ if k.startswith("FLOWTUNE_")]:
        monkeypatch.delenv(key)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(ROOT / "params.yaml", work / "params.yaml")
    (work / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    monkeypatch.chdir(work)

    world = SimpleNamespace(commands=FakeCommands(), registry=FakeRegistry(tmp_path / "registry"),
                            reports=[], cards=[])

    def run_logged(command: list[str], what: str, timeout_s: float | None = None, limit_from: str = "") -> None:
        world.commands.limits[what] = timeout_s
        world.commands(command, what)

    for module in (flows.orchestration.steps, flows.orchestration.champion, flows.orchestration.remote_train):
        monkeypatch.setattr(module, "run_logged", run_logged)
    # A failing step fails the test at once instead of after its retries' 5 + 20 s delays.
    for name in ("dvc_pull", "dvc_push", "known_version", "publish_version", "move_champion", "publish_card"):
        task = getattr(flows.orchestration.pipeline, name)
        monkeypatch.setattr(flows.orchestration.pipeline, name, task.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(flows.orchestration.steps, "check_storage", lambda settings: None)
    monkeypatch.setattr(flows.orchestration.pipeline, "stale_stages", lambda stages: stages)
    monkeypatch.setattr(flows.orchestration.pipeline, "registry_of", lambda settings: world.registry)
    monkeypatch.setattr(flows.orchestration.reports, "publish",
                        lambda stage, *args, **kwargs: world.reports.append(stage) or {})
    monkeypatch.setattr(flows.orchestration.reports, "publish_model_card",
                        lambda settings, name, version, card: world.cards.append((name, version)) or "s3://cards")
    return world


def server_state(state):
    """The flow run's final state as the Prefect server recorded it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).state


@pytest.mark.parametrize("champion_f1, candidate_f1, reason", [
    (None, 0.05, ["0.0500 < floor gate.min_f1"]),
    (0.90, 0.60, ["vs champion v1 on the same test set", "0.6000 vs 0.9000 (-0.3000"]),
], ids=["below-the-floor", "worse-than-the-champion"])
def test_a_rejected_candidate_is_never_published(world, champion_f1, candidate_f1, reason):
    if champion_f1 is not None:
        world.registry.add(b"champion weights")
    world.commands = FakeCommands(f1=candidate_f1, champion_f1=champion_f1 or 0.0)

    state = training_pipeline(return_state=True)

    assert state.is_failed()
    assert state.message.startswith("gate rejected the candidate: ")
    assert all(part in state.message for part in reason), state.message
    recorded = server_state(state)  # what the Prefect UI shows
    assert recorded.is_failed() and recorded.message == state.message
    assert world.registry.published == [] and world.registry.moves == [] and world.cards == []
    assert world.registry.alias_of == ({} if champion_f1 is None else {"champion": 1})
    assert ("score champion" in world.commands.log) == (champion_f1 is not None)
    assert json.loads(Path(".flowtune/last_gate.json").read_text())["promote"] is False


def test_a_failed_data_contract_stops_the_run_before_anything_trains(world):
    world.registry.add(b"champion weights")
    world.commands = FakeCommands(fail="validate")

    state = training_pipeline(return_state=True)

    assert state.is_failed() and "stage 'validate' failed" in state.message
    assert world.commands.stages == ["ingest", "validate"]  # clean, augment, train, evaluate never ran
    assert "dvc push" not in world.commands.log and "score champion" not in world.commands.log
    assert world.reports == ["ingest", "validate"]  # the failed contract's report is still shown on the run
    assert world.registry.published == [] and world.registry.moves == []
    assert not Path(world.commands.params.paths.model).exists()


def test_train_on_routes_the_train_stage_to_the_pool(world, monkeypatch):
    deployment = f"{TRAIN_STAGE_FLOW}/gpu"
    remote = SimpleNamespace(id=uuid.uuid4(), name="fake-remote-run", state=Completed())
    submitted = []

    def run_remote(deployment: str, parameters: dict, timeout_s: float):
        world.commands.log.append(f"remote {deployment}")
        submitted.append((deployment, parameters, timeout_s))
        return remote

    class S3:  # where the remote run left its dvc.lock
        def get_object(self, Bucket: str, Key: str) -> dict:
            assert Key == flows.orchestration.remote_train.lock_key(str(remote.id))
            return {"Body": io.BytesIO(b"schema: '2.0'\nstages: {train: {}}\n")}

    monkeypatch.setattr(flows.orchestration.remote_train, "run_remote", run_remote)
    monkeypatch.setattr(flows.orchestration.remote_train, "committed_revision", lambda: "c0ffee")
    monkeypatch.setattr(flows.orchestration.remote_train, "s3_client", lambda settings: S3())

    state = training_pipeline(train_on=deployment, train_timeout_s=123.0, return_state=True)

    assert state.is_completed(), state.message
    assert len(submitted) == 1
    name, parameters, timeout_s = submitted[0]
    assert name == deployment and name.split("/") == [TRAIN_STAGE_FLOW, "gpu"] and timeout_s == 123.0
    assert parameters["revision"] == "c0ffee"
    assert parameters["params_yaml"] == Path("params.yaml").read_text()
    assert "train" not in world.commands.stages  # never trained here
    assert world.commands.stages == [s for s in STAGES if s != "train"]
    log = world.commands.log
    # the inputs are pushed for the other machine first; its model is pulled back before evaluate runs
    assert log.index("dvc push") < log.index(f"remote {deployment}") < log.index("dvc pull train") \
        < log.index("dvc repro --single-item evaluate")
    assert Path("dvc.lock").read_text() == "schema: '2.0'\nstages: {train: {}}\n"
    assert [p["version"] for p in world.registry.published] == [1]


def test_a_candidate_with_the_champions_weights_publishes_nothing(world):
    world.registry.add(b"older weights", alias=None)
    version = world.registry.add(b"same weights")
    world.commands = FakeCommands(weights=b"same weights")

    state = training_pipeline(return_state=True)

    assert state.is_completed()
    result = state.result()
    assert result["unchanged"] is True and result["message"] == f"unchanged: champion is v{version} (same weights)"
    assert world.registry.published == [] and world.registry.moves == [] and world.cards == []
    assert "score champion" not in world.commands.log  # not gated: nothing new to decide on
    assert world.commands.stages == list(STAGES)
    limits = world.commands.params.timeouts
    assert {what: world.commands.limits[what] for what in map("stage {!r}".format, STAGES)} == \
        {f"stage {stage!r}": limits.of(stage) for stage in STAGES}  # each stage under its own timeouts.<stage>


@pytest.mark.parametrize("champion", [False, True], ids=["first-model", "better-than-the-champion"])
def test_an_accepted_candidate_is_published_once_and_becomes_champion(world, champion):
    before = world.registry.add(b"champion weights") if champion else None
    world.commands = FakeCommands(weights=b"better weights", f1=0.6, champion_f1=0.5)

    state = training_pipeline(return_state=True)

    assert state.is_completed(), state.message
    version = 2 if champion else 1
    assert state.result()["version"] == version
    [published] = world.registry.published
    assert published["name"] == MODEL_NAME and published["version"] == version
    assert published["run_id"] == str(state.state_details.flow_run_id)
    assert {"eval.json", "lineage.json", "README.md"} <= set(published["files"])
    assert published["metadata"]["gate"]["promote"] is True and published["metadata"]["metrics"]["f1"] == 0.6
    # compare-and-swap against the champion the gate looked at
    assert world.registry.moves == [("champion", version, before)]
    assert world.registry.alias_of["champion"] == version
    assert world.cards == [(MODEL_NAME, version)]
    assert ("score champion" in world.commands.log) == champion
    assert world.commands.log.count("dvc push") == 1
