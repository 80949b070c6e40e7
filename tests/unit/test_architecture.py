"""The import contracts of pyproject.toml ([tool.importlinter]) hold: flows above tasks, no Prefect in tasks,
the layers of tasks/ (stages > kinds > task-kind modules > core), independent kinds, and no import cycle
(function-local imports included). `make lint` runs the same contracts with `lint-imports`; this test
makes `make test` fail too, with the contract's report, and keeps the stage layer equal to dvc.yaml's."""

import re
import tomllib
from pathlib import Path

import yaml
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {c["id"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
             ["contracts"]}


def test_import_contracts_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # lint-imports reads ./pyproject.toml
    exit_code = lint_imports(no_cache=True, no_logo=True)
    assert exit_code == 0, capsys.readouterr().out


def test_the_stage_layer_is_the_modules_dvc_yaml_runs():
    """A new stage must sit in the top layer: nothing may import it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    run = {re.match(r"infra/local/python -m tasks\.(\w+)", spec["cmd"]).group(1) for spec in stages}
    top_layer = CONTRACTS["tasks-layers"]["layers"][0]
    assert {name.strip() for name in top_layer.split("|")} == run


def test_no_code_outside_tasks_kinds_tells_the_kinds_apart_by_architecture():
    """A saved model's kind is what its config records (`tasks.kinds.saved.kind_of_model`, the one place that falls
    back to transformers' `architectures` for old models); predict, serve and the variants loader ask the
    seam instead of guessing from the head's class name."""
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for folder in ("flows", "tasks") for path in sorted((ROOT / folder).rglob("*.py"))
                 if "kinds" not in path.relative_to(ROOT / folder).parts[:1]
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "architectures" in line]
    assert offenders == []


def test_flows_import_no_kind_package():
    """flows/ reaches a kind through tasks.kinds only (the `flows-through-the-seam` contract, also checked here
    by text so that a dynamic import by name is caught too)."""
    kind_packages = re.compile(r"tasks[./]kinds[./](ner|textclass)\b")
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in sorted((ROOT / "flows").rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if kind_packages.search(line)]
    assert offenders == []
