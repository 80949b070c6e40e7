"""Editing one file reruns only the stages that run it (issue #34 item 2; docs/DECISIONS.md, 77).

In a copy of the working tree whose dvc.lock says every stage is up to date, each row of docs/ARCHITECTURE.md's
table "file edited -> stages rerun" edits its file, and `dvc status --json` must name exactly the row's stages,
each for that file alone. The table is the test's input, so the documentation cannot drift from the DAG.

Running the stages to get a real lock would take hours (back-translation, training). DVC's own `dvc commit
--force` records a lock from the workspace as it is, so every output dvc.yaml declares is first written as a
small placeholder: the lock then holds the real hash of every dep, the code included, which is all `dvc status`
compares. About 30 s in all: one commit, then one `dvc status` per row.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, clean_env, working_tree_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DVC = ROOT / ".venv" / "bin" / "dvc"
TABLE = "### File edited -> stages rerun"
DATA_STAGES = {"ingest", "validate", "clean", "validate_clean", "augment", "validate_augmented"}
MARK = "\n# edited by tests/integration/test_dag_invalidation.py\n"


def table_rows() -> list[tuple[str, set[str]]]:
    """(file edited, stages rerun) of each row of docs/ARCHITECTURE.md's table."""
    lines = (ROOT / "docs" / "ARCHITECTURE.md").read_text().split(TABLE, 1)[1].splitlines()
    rows = []
    for line in lines:
        row = re.fullmatch(r"\| `([^`]+)` \| [^|]+ \| ([^|]+) \|", line.strip())
        if row:
            stages = row[2].strip()
            rows.append((row[1], set() if stages == "(none)" else {stage.strip() for stage in stages.split(",")}))
        elif rows and not line.startswith("|"):
            break  # the table's end
    return rows


def dvc(repo: Path, *args: str) -> str:
    result = subprocess.run([str(DVC), *args], cwd=repo, env=clean_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def declared_data_paths(repo: Path) -> list[str]:
    """Every output of dvc.yaml and every dep under data/, with the params' paths filled in: outputs first, so
    that a dep inside an output folder (`${paths.augmented}/train.jsonl`) lands in the folder."""
    paths = yaml.safe_load((repo / "params.yaml").read_text())["paths"]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
    outs = [next(iter(entry)) if isinstance(entry, dict) else entry
            for spec in stages for section in ("outs", "metrics", "plots") for entry in spec.get(section, [])]
    deps = [dep for spec in stages for dep in spec["deps"] if dep.startswith(("${paths.", "data/"))]
    return [re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m[1]], path) for path in [*outs, *deps]]


def write_placeholders(repo: Path) -> None:
    """A small file for each declared data path missing from the copy: a file where the name has a suffix
    (.json, .csv, .safetensors), else a folder holding one file."""
    for name in declared_data_paths(repo):
        path = repo / name
        if path.exists():
            continue
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True)
            (path / "placeholder").write_text("placeholder\n")


def changed_deps(repo: Path) -> dict[str, set[str]]:
    """Per stage `dvc status` finds out of date, the deps it names as changed."""
    status = json.loads(dvc(repo, "status", "--json") or "{}")
    return {stage: {dep for change in changes if isinstance(change, dict) for dep in change.get("changed deps", {})}
            for stage, changes in status.items()}


@pytest.fixture(scope="module")
def up_to_date(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree's copy with placeholder outputs and a dvc.lock that matches it: no stage to rerun."""
    repo = working_tree_copy(tmp_path_factory.mktemp("dag") / "repo")
    write_placeholders(repo)
    dvc(repo, "commit", "--force")
    assert changed_deps(repo) == {}, "right after `dvc commit` every stage is up to date"
    return repo


@pytest.mark.parametrize(("edited", "stages"), table_rows(), ids=[edited for edited, _ in table_rows()])
def test_editing_a_file_reruns_exactly_the_stages_of_its_row(up_to_date: Path, edited: str, stages: set[str]):
    path = up_to_date / edited
    original = path.read_bytes()
    path.write_bytes(original + MARK.encode())
    try:
        changed = changed_deps(up_to_date)
    finally:
        path.write_bytes(original)  # the same content again: the next row starts up to date
    assert set(changed) == stages, f"editing {edited}: dvc status names {sorted(changed)}, the table {sorted(stages)}"
    assert all(deps == {edited} for deps in changed.values()), changed


def test_the_table_covers_each_group_and_keeps_the_cut():
    """The issue's five groups are rows, and the rows say what the cut promises: the training loop and the model
    head rerun no data stage, an augmenter and the contract no model stage."""
    rows = dict(table_rows())
    groups = {"tasks/engine.py", "tasks/trainer.py", "tasks/kinds/ner/records.py", "tasks/kinds/ner/modeling.py",
              "tasks/augmenters/backtranslation.py", "tasks/kinds/ner/contract.py"}
    assert groups <= set(rows)
    for training in ("tasks/engine.py", "tasks/trainer.py", "tasks/kinds/ner/modeling.py"):
        assert "train" in rows[training] and not rows[training] & DATA_STAGES, training
    for preparation in ("tasks/augmenters/backtranslation.py", "tasks/kinds/ner/contract.py"):
        assert rows[preparation] and rows[preparation] <= DATA_STAGES, preparation
