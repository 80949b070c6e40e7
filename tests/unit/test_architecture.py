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


def architecture_table() -> dict[str, set[str]]:
    """docs/ARCHITECTURE.md's table of packages and modules: package folder -> the modules it names."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = [line for line in text.split("| package | modules |", 1)[1].splitlines()[2:]]
    table: dict[str, set[str]] = {}
    for row in rows:
        if not row.startswith("|"):
            break
        packages, modules = row.split("|")[1:3]
        for package in re.findall(r"`([\w/]+)/`", packages):
            table.setdefault(package, set()).update(re.findall(r"`(\w+)`", modules))
    return table


def test_the_architecture_table_names_every_package_and_module_and_nothing_else():
    """docs/ARCHITECTURE.md is where a newcomer learns the folders: a module added, moved or renamed without a row
    in its table fails here, and so does a row naming what no longer exists."""
    table = architecture_table()
    packages = {str(init.parent.relative_to(ROOT)) for folder in ("flows", "tasks")
                for init in (ROOT / folder).rglob("__init__.py")}
    assert set(table) == packages, (f"packages missing from the table: {sorted(packages - set(table))}; "
                                    f"named but absent: {sorted(set(table) - packages)}")
    for package, named in table.items():
        present = {path.stem for path in (ROOT / package).glob("*.py") if path.name != "__init__.py"}
        assert named == present, (f"{package}/: modules missing from the table: {sorted(present - named)}; "
                                  f"named but absent: {sorted(named - present)}")
