"""dvc.yaml, params.yaml and tasks/ agree: every stage's module exists, every key exists."""

import importlib
import re
from pathlib import Path

import pytest
import yaml

from tasks.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def lookup(key: str):
    node = PARAMS
    for part in key.split("."):
        node = node[part]
    return node


def interpolate(text: str) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(m.group(1))), text)


def test_params_file_loads():
    assert load_params(ROOT / "params.yaml").registry.model_name


def key_paths(node, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix}
    return {path for key, value in node.items() for path in key_paths(value, f"{prefix}.{key}" if prefix else key)}


def test_the_classification_example_has_every_key_of_params_yaml_and_keeps_the_paths():
    """params-sentiment.yaml replaces params.yaml (flow `params_file`, or `cp` for dvc repro): it must load,
    have the same keys, and write the same paths (dvc.yaml interpolates them)."""
    example = yaml.safe_load((ROOT / "params-sentiment.yaml").read_text())
    assert key_paths(example) == key_paths(PARAMS)
    assert example["paths"] == PARAMS["paths"]
    loaded = load_params(ROOT / "params-sentiment.yaml")
    assert loaded.task == "sequence-classification" and loaded.validate_.labels == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_module_and_params_exist(stage: str):
    spec = DVC["stages"][stage]
    module = re.fullmatch(r"python -m (tasks\.\w+)( --[\w-]+ \w+)*", spec["cmd"]).group(1)
    assert hasattr(importlib.import_module(module), "main")
    assert f"{module.replace('.', '/')}.py" in spec["deps"], "a stage depends on its own code"
    for key in spec["params"]:
        lookup(key)  # raises KeyError when dvc.yaml names a missing key


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_outputs_are_declared_paths(stage: str):
    declared = set(PARAMS["paths"].values())
    spec = DVC["stages"][stage]
    for section in ("outs", "metrics", "plots"):
        for entry in spec.get(section, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            assert interpolate(path) in declared


def test_code_deps_exist():
    for spec in DVC["stages"].values():
        for dep in spec["deps"]:
            if dep.endswith(".py"):
                assert (ROOT / dep).is_file(), dep


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path):
    broken = dict(PARAMS, train=dict(PARAMS["train"], epochz=3))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.epochz: Extra inputs are not permitted"):
        load_params(path)


def test_missing_params_file_is_named(tmp_path: Path):
    with pytest.raises(ParamsError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_top_level_plots_use_declared_paths():
    declared = set(PARAMS["paths"].values())
    for plot in DVC.get("plots", []):
        for spec in plot.values():
            assert set(spec["y"]) <= declared
