"""The gate keeps a champion's registered report when its evaluation ran on the same inputs as the candidate's
(flows/orchestration/champion.py): the same evaluate-stage code, test split, reference data and params, read
from the dvc.lock stored in the version's lineage and this checkout's; any difference scores it again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from flows.orchestration import champion as champion_module
from flows.orchestration.champion import champion_metrics, same_evaluation
from tasks.params import load_params
from tests.flows.test_pipeline_orchestration import write_report
from tests.helpers import ROOT

MODEL = "data/models/candidate"


def lock(model_md5: str = "m1", test_md5: str = "t1", code_md5: str = "c1", max_length: int = 128) -> dict:
    """A dvc.lock with the evaluate stage as DVC 3 writes it (and another stage, which must not matter)."""
    return {"schema": "2.0", "stages": {
        "train": {"cmd": "infra/local/python -m tasks.train", "deps": [{"path": "x", "md5": "anything"}]},
        "evaluate": {"cmd": "infra/local/python -m tasks.evaluate",
                     "deps": [{"path": "tasks/evaluate.py", "hash": "md5", "md5": code_md5, "size": 10},
                              {"path": MODEL, "hash": "md5", "md5": model_md5, "size": 99, "nfiles": 4},
                              {"path": "data/augmented/test.jsonl", "hash": "md5", "md5": test_md5, "size": 7}],
                     "params": {"params.yaml": {"train.max_length": max_length, "evaluate": {"batch_size": 32}}},
                     "outs": [{"path": "data/metrics/eval.json", "md5": f"out-{model_md5}"}]}}}


def test_only_the_model_may_differ():
    registered = lock()
    assert same_evaluation(registered, lock(model_md5="m2"), MODEL)  # another model, same evaluation
    assert not same_evaluation(registered, lock(model_md5="m2", test_md5="t2"), MODEL)  # the test split changed
    assert not same_evaluation(registered, lock(model_md5="m2", code_md5="c2"), MODEL)  # the evaluation code
    assert not same_evaluation(registered, lock(model_md5="m2", max_length=64), MODEL)  # a param
    reordered = copy.deepcopy(registered)
    reordered["stages"]["evaluate"]["deps"].reverse()
    assert same_evaluation(reordered, lock(model_md5="m2"), MODEL)  # the order of the deps is not an input
    assert not same_evaluation(None, lock(), MODEL)  # a version registered without a lock
    assert not same_evaluation({"stages": {}}, lock(), MODEL)
    assert not same_evaluation(lock(), None, MODEL)  # no dvc.lock here


class OneVersionRegistry:
    """The Registry calls champion_metrics makes, for a champion v3 registered with `lineage`."""

    def __init__(self, lineage: dict):
        self.lineage, self.downloads = lineage, 0

    def get_alias(self, name: str, alias: str) -> int:
        return 3

    def manifest(self, name: str, version: int) -> dict:
        return {"name": name, "version": version, "metadata": self.lineage}

    def download(self, name: str, version: int, dest: Path) -> Path:
        self.downloads += 1
        Path(dest).mkdir(parents=True)
        return Path(dest)


@pytest.mark.parametrize("test_md5, rescored", [("t1", False), ("t2", True)], ids=["same-inputs", "new-test-split"])
def test_the_gate_reuses_the_registered_report_only_for_the_same_inputs(tmp_path: Path, monkeypatch, test_md5: str,
                                                                       rescored: bool):
    params = load_params(ROOT / "params.yaml")
    write_report(tmp_path / "registered.json", 0.7)
    lineage = {"dvc_lock": lock(model_md5="champion"),
               "metrics": json.loads((tmp_path / "registered.json").read_text())}
    registry = OneVersionRegistry(lineage)
    monkeypatch.chdir(tmp_path)
    Path("dvc.lock").write_text(yaml.safe_dump(lock(model_md5="candidate", test_md5=test_md5)))
    scored = []

    def run_logged(command, what, **limits):  # the champion scored again, by the candidate's code
        scored.append(what)
        write_report(Path(command[command.index("--out") + 1]), 0.4)

    monkeypatch.setattr(champion_module, "run_logged", run_logged)
    champion = champion_metrics(params, registry, reuse=True)
    assert champion.version == 3
    assert champion.report.headline.value == (0.4 if rescored else 0.7)
    assert (scored, registry.downloads) == (([f"scoring {params.registry.model_name} v3 (champion)"], 1) if rescored
                                            else ([], 0))
    # Without `reuse` (the evaluate-champion flow) it is always scored again.
    scored.clear()
    assert champion_metrics(params, registry).report.headline.value == 0.4 and len(scored) == 1
