"""Which stages a run sends through `dvc repro` (flows/orchestration/steps.py: stale_stages): from the first
stage `dvc status` reports changed to the end, in pipeline order; the stages before it are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx
import pytest
import yaml

from flows.orchestration.steps import STAGES, changed_stages, from_first_changed, status_line
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


def test_the_tail_from_the_first_changed_stage_is_stale():
    stages = ("a", "b", "c", "d")
    assert from_first_changed(stages, {"c"}) == ("c", "d")
    assert from_first_changed(stages, {"d", "b"}) == ("b", "c", "d")
    assert from_first_changed(stages, {"elsewhere.dvc"}) == ()
    assert from_first_changed(stages, set()) == ()
    assert status_line(stages, ()) == "every stage up to date"
    assert status_line(stages, stages) == "a changed: every stage goes through dvc repro"
    assert status_line(stages, ("c", "d")) == "up to date until c: c, d go through dvc repro"


def test_the_pipeline_order_puts_every_stage_after_its_upstream_stages():
    """Skipping the stages before the first changed one is safe only if none of them depends on a later one."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # edges run from a stage to the stages it depends on
        upstream = {stage.name: {dep.name for dep in networkx.descendants(graph, stage)} for stage in graph.nodes}
    assert set(STAGES) == set(upstream), "STAGES must list exactly dvc.yaml's stages"
    for position, stage in enumerate(STAGES):
        later = upstream[stage] & set(STAGES[position + 1:])
        assert not later, f"{stage!r} depends on {sorted(later)}, which STAGES runs after it"


def dvc(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True, text=True)


def test_dvc_status_names_the_changed_stage_by_its_name(tmp_path: Path, monkeypatch):
    """A real DVC repo of three chained stages: after a repro nothing is changed; editing the middle stage's
    own input reports that stage (DVC does not report the one after it: its input has not changed yet)."""
    (tmp_path / "in.txt").write_text("one\n")
    (tmp_path / "extra.txt").write_text("x\n")
    stages = {"first": {"cmd": "cp in.txt a.txt", "deps": ["in.txt"], "outs": ["a.txt"]},
              "second": {"cmd": "cat a.txt extra.txt > b.txt", "deps": ["a.txt", "extra.txt"], "outs": ["b.txt"]},
              "third": {"cmd": "cp b.txt c.txt", "deps": ["b.txt"], "outs": ["c.txt"]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    dvc(tmp_path, "init", "--no-scm")
    dvc(tmp_path, "repro")
    monkeypatch.chdir(tmp_path)
    assert changed_stages() == set()
    (tmp_path / "extra.txt").write_text("y\n")
    assert changed_stages() == {"second"}
    assert from_first_changed(("first", "second", "third"), changed_stages()) == ("second", "third")
