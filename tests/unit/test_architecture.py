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
