"""dvc.yaml, params.yaml, tasks/ and flows/ agree: every stage's module exists, every key exists, every
stage lists exactly the code it runs, and the flows run the stages dvc.yaml declares."""

import ast
import importlib
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from flows.orchestration import reports, steps
from tasks.kinds import ENTRY_MODULES
from tasks.params import Params, ParamsError, load_params, schema_of

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PACKAGES = ("tasks", "flows")  # the project's own code; every other import is a pinned dependency
# Each params file of the project, with the task kind it picks (tasks/kinds/<kind>/).
PARAMS_FILES = {name: yaml.safe_load((ROOT / name).read_text()) for name in ("params.yaml", "params-sentiment.yaml")}
KINDS = sorted(folder.name for folder in (ROOT / "tasks" / "kinds").iterdir() if (folder / "__init__.py").is_file())


def lookup(key: str, params: dict = PARAMS):
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def interpolate(text: str, params: dict = PARAMS) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(m.group(1), params)), text)


def test_params_file_loads():
    assert load_params(ROOT / "params.yaml").registry.model_name


def key_paths(node, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix}
    return {path for key, value in node.items() for path in key_paths(value, f"{prefix}.{key}" if prefix else key)}


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The dotted keys a params model reads (its sections' fields by their YAML names)."""
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        sections = [t for t in types_in(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        keys |= schema_keys(sections[0], f"{key}.") if sections else {key}
    return keys


def test_each_params_file_has_exactly_its_kinds_keys_and_the_same_paths():
    """params-sentiment.yaml replaces params.yaml (flow `params_file`, or `cp` for dvc repro): it loads into the
    text-classification schema, which has no key of NER's own, and writes the same paths (dvc.yaml
    interpolates them)."""
    common = schema_keys(Params)
    own = {kind: schema_keys(schema_of({"task": {"kind": kind}})) - common for kind in KINDS}
    assert own["ner"] and own["textclass"] and not own["ner"] & own["textclass"]
    assert {"ingest.tag_scheme", "clean.bio_repair", "train.label_all_pieces", "evaluate.checklist.name_type",
            "validate.reference_profile"} <= own["ner"]
    assert {"task.multi_label", "ingest.text_column", "validate.class_share"} <= own["textclass"]
    example = PARAMS_FILES["params-sentiment.yaml"]
    assert example["paths"] == PARAMS["paths"]
    loaded = load_params(ROOT / "params-sentiment.yaml")
    assert loaded.task.kind == "textclass" and loaded.task.labels == ["negative", "neutral", "positive"]


def test_a_key_of_another_kind_is_rejected_with_its_name(tmp_path: Path):
    example = PARAMS_FILES["params-sentiment.yaml"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(dict(example, clean=dict(example["clean"], bio_repair="repair"))))
    with pytest.raises(ParamsError, match=r"params\.yaml: clean\.bio_repair: Extra inputs are not permitted"):
        load_params(path)
    path.write_text(yaml.safe_dump(dict(example, task={"kind": "sentiment", "labels": []})))
    with pytest.raises(ParamsError, match=r"params\.yaml: task\.kind: expected one of ner, textclass, got 'sentiment'"):
        load_params(path)
    path.write_text(yaml.safe_dump(dict(example, task="sequence-classification", kind="textclass")))
    with pytest.raises(ParamsError, match=r"params\.yaml: task: 'sequence-classification' is the old layout; write "
                                          r"a section `task: \{kind: ner \| textclass, labels: \[\.\.\.\]\}`"):
        load_params(path)


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_module_and_params_exist(stage: str):
    spec = DVC["stages"][stage]
    module = re.fullmatch(r"infra/local/python -m (tasks\.\w+)( --[\w-]+ \w+)*", spec["cmd"]).group(1)
    assert hasattr(importlib.import_module(module), "main")
    assert f"{module.replace('.', '/')}.py" in spec["deps"], "a stage depends on its own code"
    for key in spec["params"]:
        for params in PARAMS_FILES.values():  # only keys every kind has
            lookup(key, params)  # raises KeyError when dvc.yaml names a missing key


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_outputs_are_declared_paths(stage: str):
    declared = set(PARAMS["paths"].values())
    spec = DVC["stages"][stage]
    for section in ("outs", "metrics", "plots"):
        for entry in spec.get(section, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            assert interpolate(path) in declared


@pytest.mark.parametrize("params_file", list(PARAMS_FILES))
def test_code_deps_exist(params_file: str):
    """Every kind's package has the files dvc.yaml names through ${task.kind} (DVC fails on a missing dep)."""
    for spec in DVC["stages"].values():
        for dep in spec["deps"]:
            if dep.endswith(".py"):
                path = interpolate(dep, PARAMS_FILES[params_file])
                assert (ROOT / path).is_file(), path


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


# ------------------------------------------------------------------- each stage lists the code it runs


def stage_module(spec: dict) -> str:
    return re.fullmatch(r"infra/local/python -m (tasks\.\w+)( --[\w-]+ \w+)*", spec["cmd"]).group(1)


def module_files(name: str) -> set[Path]:
    """The project files Python runs to import dotted `name`: each package's __init__.py, then the module."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return set()
    folders = [ROOT.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
    return {file for folder in folders for file in (folder.with_suffix(".py"), folder / "__init__.py")
            if file.is_file()}


def imported_names(path: Path) -> set[str]:
    """Every module name `path` may import, function-local imports included (`from a import b`: a and a.b)."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            anchor = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(part for part in (anchor, node.module) if part)
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return names


def imported_by_name(path: Path, names: set[str], kind: str) -> set[str]:
    """The modules of `kind`'s package that `path` makes Python import by a name computed at run time, invisible to
    the AST: each registry function of tasks.kinds that `path` imports imports its module of the kind's package
    (`tasks.kinds.ENTRY_MODULES`: data_kind_for the data side, model_kind_for the model side, kind_for both), and
    tasks/params.py imports the kind's params schema."""
    found = {f"tasks.kinds.{kind}.{entry}" for function, entry in ENTRY_MODULES.items()
             if f"tasks.kinds.{function}" in names}
    return found | ({f"tasks.kinds.{kind}.params"} if path == ROOT / "tasks" / "params.py" else set())


def import_closure(module: str, kind: str) -> set[str]:
    """The project files (repo-relative) that `python -m module` can run with the params' `kind`, following
    imports transitively, those a registry of tasks.kinds makes by name included."""
    todo, seen = list(module_files(module)), set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            names = imported_names(path)
            names |= imported_by_name(path, names, kind)
            todo += [file for name in names for file in module_files(name)]
    return {path.relative_to(ROOT).as_posix() for path in seen}


def code_deps(deps: list[str]) -> set[str]:
    """The .py files a stage's deps name: a file, or every .py file under a package directory."""
    files = {dep for dep in deps if dep.endswith(".py")}
    for folder in (ROOT / dep for dep in deps if dep.split("/")[0] in PACKAGES and (ROOT / dep).is_dir()):
        files |= {path.relative_to(ROOT).as_posix() for path in folder.rglob("*.py")}
    return files


def kind_package(kind: str) -> set[str]:
    """Every .py file of a task kind's package (tasks/kinds/<kind>/)."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "tasks" / "kinds" / kind).rglob("*.py")}


@pytest.mark.parametrize("params_file", list(PARAMS_FILES))
@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_deps_are_exactly_the_code_its_module_imports(stage: str, params_file: str):
    """DVC reruns a stage only when a dep changes: a missing file leaves stale outputs, an extra one reruns
    the stage for nothing. A stage's kind code is the files of its side of `tasks/kinds/${task.kind}` (never the
    other kind's: a classifier-only change does not rerun an NER stage; never the other side's: editing the
    training loop reruns no data stage, editing the contract no training), file by file like the core's
    (docs/DECISIONS.md, 36 and 77)."""
    spec, params = DVC["stages"][stage], PARAMS_FILES[params_file]
    module, kind = stage_module(spec), params["task"]["kind"]
    runs = import_closure(module, kind)
    others = set().union(*(kind_package(other) for other in KINDS if other != kind))
    assert not runs & others, f"stage {stage!r} with kind {kind!r} imports another kind: {sorted(runs & others)}"
    # One dvc.yaml serves every kind: its core files are those the stage runs with any kind (e.g. tasks/iob.py,
    # NER's tag rules), its kind files those it runs with this one, which dvc.yaml names through ${task.kind}.
    core = set().union(*(import_closure(module, any_kind) - kind_package(any_kind) for any_kind in KINDS))
    expected = core | (runs & kind_package(kind))
    listed = code_deps([interpolate(dep, params) for dep in spec["deps"]])
    assert listed == expected, (f"stage {stage!r} ({params_file}): missing from deps {sorted(expected - listed)}, "
                                f"superfluous in deps {sorted(listed - expected)}")


DATA_STAGES = ("ingest", "validate", "clean", "validate_clean", "augment", "validate_augmented")
# What a data stage must not run: the training loop and its helpers, saving and variants, the model side of a kind.
TRAINING_CODE = {"tasks/engine.py", "tasks/trainer.py", "tasks/trainable.py", "tasks/saving.py", "tasks/checkpoints.py",
                 "tasks/variants.py", "tasks/sweeping.py", "tasks/kinds/base.py", "tasks/kinds/saved.py"}
TRAINING_MODULES = ("modelkind", "kind", "training", "modeling", "evaluate", "predict", "audit")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_data_stages_run_no_training_code_and_model_stages_no_data_preparation(stage: str, kind: str):
    """The cut of docs/DECISIONS.md, 77: editing the training loop or a model head reruns no data stage, and
    editing cleaning, the contract or an augmenter reruns no model stage."""
    runs = import_closure(stage_module(DVC["stages"][stage]), kind)
    if stage in DATA_STAGES:
        training = TRAINING_CODE | {f"tasks/kinds/{kind}/{name}.py" for name in TRAINING_MODULES}
        assert not runs & training, f"data stage {stage!r} runs training code: {sorted(runs & training)}"
    else:
        preparation = {f"tasks/kinds/{kind}/{name}.py" for name in ("datakind", "clean", "contract")}
        preparation |= {path for path in runs if path.startswith("tasks/augmenters/")}
        preparation |= {"tasks/contract.py", "tasks/augment.py"}
        assert not runs & preparation, f"model stage {stage!r} runs data preparation: {sorted(runs & preparation)}"


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_code_deps_are_its_own_module_then_sorted(stage: str):
    spec = DVC["stages"][stage]
    code = [dep for dep in spec["deps"] if dep.split("/")[0] in PACKAGES]
    own = f"{stage_module(spec).replace('.', '/')}.py"
    assert code[0] == own and code[1:] == sorted(code[1:]), f"stage {stage!r}: code deps {code}"


# ------------------------------------------------------------------ the flows run dvc.yaml's stages


def test_the_flows_stage_lists_are_dvc_yamls():
    stages = list(DVC["stages"])
    assert list(steps.STAGES) == stages
    assert list(steps.DATA_STAGES) == stages[:stages.index("train")]
    contracts = {stage: spec["cmd"].partition(" --data ")[2] for stage, spec in DVC["stages"].items()
                 if stage_module(spec) == "tasks.validate"}
    assert reports.CONTRACT_STAGES == contracts


# ------------------------------------------------------------------ defaults live only in params files


def types_in(annotation) -> list:
    """`annotation` and every type argument inside it (list[X] | None: X too)."""
    return [annotation, *(found for arg in get_args(annotation) for found in types_in(arg))]


def models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every pydantic model its fields can hold, depth first."""
    nested = [kind for field in model.model_fields.values() for kind in types_in(field.annotation)
              if isinstance(kind, type) and issubclass(kind, BaseModel)]
    return [model, *(found for sub in nested for found in models(sub))]


def test_params_models_have_no_defaults():
    """params.yaml is the one home of a default: a key missing there is an error, not a silent fallback."""
    schemas = [schema_of({"task": {"kind": kind}}) for kind in KINDS]
    defaulted = [f"{model.__name__}.{name}" for schema in schemas for model in models(schema)
                 for name, field in model.model_fields.items() if not field.is_required()]
    assert defaulted == [], f"fields with a default in tasks/params.py: {defaulted}"
