"""Security defences that need no services: ignored secret files, the Docker build context, credentials
kept out of lineage (docs/SECURITY.md lists each threat and the test that proves the defence)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pathspec
import pytest
import yaml

from tests.helpers import ROOT


def git_ignores(path: str) -> bool:
    """`git check-ignore --no-index`: whether .gitignore ignores `path`, tracked or not."""
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    return result.returncode == 0


@pytest.mark.parametrize("path", [".env", ".env.local", ".env.production", "infra/compose/.env",
                                  "infra/compose/.env.local", ".dvc/config.local", ".flowtune/s3.json"])
def test_secret_files_are_git_ignored(path: str) -> None:
    assert git_ignores(path)


@pytest.mark.parametrize("path", [".env.example", "infra/compose/.env.example"])
def test_env_templates_stay_tracked(path: str) -> None:
    assert not git_ignores(path)


# ---------------------------------------------------------------- the Docker build context

COMPOSE_DIR = ROOT / "infra/compose"
# Local state a developer's checkout holds, none of which may reach an image.
LOCAL_SECRETS_AND_STATE = [
    ".env", ".env.local", ".env.production", "infra/compose/.env", "infra/compose/.env.local",
    ".dvc/config.local", ".dvc/cache/files/md5/3e/573ccca7", ".dvc/tmp/flowtune-run.lock", ".dvc/tmp/rwlock",
    ".flowtune/s3.json", ".flowtune/prefect/prefect.db", ".flowtune/seaweedfs/volume.dat",
    ".flowtune/workspaces/run-1/.env", ".venv/bin/python", ".venv/.installed-0123456789abcdef", ".git/config",
    "data/raw/train.jsonl", "data/models/model/model.safetensors", "data/models/checkpoints/last.pt",
    "data/metrics/eval.json", "tasks/__pycache__/stage.cpython-311.pyc", ".pytest_cache/v/cache/nodeids",
    "flowtune.egg-info/PKG-INFO",
]


def build_context_root() -> Path:
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    return (COMPOSE_DIR / compose["services"]["worker"]["build"]["context"]).resolve()


def dockerignore_lines(root: Path) -> list[str]:
    lines = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def build_context(root: Path) -> set[str]:
    """The files `docker build` sends from `root`, computed from its .dockerignore.

    pathspec's gitignore matcher stands in for Docker's (Go filepath.Match plus `**`, `!` exceptions, the
    last matching pattern wins, an excluded folder excludes its contents). They differ on slash-less
    patterns (git: any depth; Docker: the context root only) and on a trailing `/` (git: folders only;
    Docker: cleaned away); `test_dockerignore_patterns_mean_the_same_to_docker_and_git` rules both out.
    """
    spec = pathspec.PathSpec.from_lines("gitignore", dockerignore_lines(root))
    files = {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}
    return {path for path in files if not spec.match_file(path)}


@pytest.fixture
def scratch_checkout(tmp_path: Path) -> Path:
    """A copy of the tracked files plus a developer's local secrets and state (as `make run` leaves them)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, tmp_path / name)
    for name in LOCAL_SECRETS_AND_STATE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("SECRET\n")
    return tmp_path


def test_the_build_context_is_the_repository_root() -> None:
    assert build_context_root() == ROOT and (ROOT / ".dockerignore").is_file()


def test_dockerignore_patterns_mean_the_same_to_docker_and_git() -> None:
    for line in dockerignore_lines(ROOT):
        pattern = line.removeprefix("!")
        assert pattern.startswith(("/", "**/")), f"{line!r}: anchor it with / or **/ (Docker and git differ)"
        assert not pattern.endswith("/"), f"{line!r}: a trailing / means 'folders only' to git, nothing to Docker"


def test_the_image_gets_no_local_secret_or_state(scratch_checkout: Path) -> None:
    shutil.copyfile(ROOT / ".dockerignore", scratch_checkout / ".dockerignore")
    context = build_context(scratch_checkout)
    leaked = sorted(path for path in context if path in LOCAL_SECRETS_AND_STATE)
    assert not leaked, f"the image would contain {leaked}"


def test_the_image_gets_every_file_its_dockerfile_uses(scratch_checkout: Path) -> None:
    """`COPY . .` then `bash infra/local/bootstrap.sh`: a clean checkout, i.e. every tracked file."""
    shutil.copyfile(ROOT / ".dockerignore", scratch_checkout / ".dockerignore")
    context = build_context(scratch_checkout)
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text().splitlines()
    sources = [line.split()[1:-1] for line in dockerfile if line.startswith("COPY ")]
    assert sources == [["."]], "a new COPY source: check it below"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    missing = sorted(set(tracked.splitlines()) - context)
    assert not missing, f"the image would lack tracked files {missing[:10]}"
    for needed in ("infra/local/bootstrap.sh", "requirements.lock", "pyproject.toml", "README.md",
                   "infra/compose/.env.example", "flows/cli/main.py", "tasks/settings.py"):
        assert needed in context, needed


# ---------------------------------------------------------------- docs/SECURITY.md

def test_every_test_named_in_security_md_exists() -> None:
    """Each row's proof is a real test: a renamed or deleted test must not leave the table lying."""
    named = re.findall(r"(tests/[\w/]+\.py)::(\w+)", (ROOT / "docs/SECURITY.md").read_text())
    assert len(named) >= 10
    for path, test in named:
        assert re.search(rf"^def {test}\(", (ROOT / path).read_text(), re.MULTILINE), f"{path}::{test}"


# ---------------------------------------------------------------- model loading

def model_loads() -> list[tuple[str, int, bool]]:
    """(file, line, passes use_safetensors=True) for each `<model class>.from_pretrained(...)` in our code
    (tokenizers and configs hold no pickles)."""
    import ast

    calls = []
    for folder in ("tasks", "flows", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "from_pretrained" and isinstance(node.func.value, ast.Name)
                        and not node.func.value.id.endswith(("Tokenizer", "Config"))):
                    safe = any(k.arg == "use_safetensors" and isinstance(k.value, ast.Constant)
                               and k.value.value is True for k in node.keywords)
                    calls.append((str(path.relative_to(ROOT)), node.lineno, safe))
    return calls


def test_every_model_is_loaded_from_safetensors_only() -> None:
    calls = model_loads()
    assert len(calls) >= 6, calls  # the scan sees our loaders
    assert [c for c in calls if not c[2]] == []


def test_a_model_folder_holding_only_a_pickle_is_refused(tmp_path: Path, tiny_base: Path) -> None:
    """`pytorch_model.bin` is a pickle: loading a downloaded one may run its code. Refused, not loaded."""
    import torch
    from transformers import AutoConfig, BertForTokenClassification

    from tasks.kinds.saved import predictor_for

    folder = tmp_path / "model"
    shutil.copytree(tiny_base, folder)
    (folder / "model.safetensors").unlink()
    config = AutoConfig.from_pretrained(folder, num_labels=3, id2label={0: "O", 1: "B-person", 2: "I-person"})
    config.architectures = ["BertForTokenClassification"]  # a tagger saved as a pickle
    config.save_pretrained(folder)
    torch.save(BertForTokenClassification(config).state_dict(), folder / "pytorch_model.bin")
    predictor = predictor_for(folder, 8, 32)  # the weights load on first use
    with pytest.raises(OSError, match="model.safetensors"):
        predictor.predict(["hello world"], ["0"])


def test_dvc_sends_no_usage_analytics() -> None:
    """Offline by default: DVC's analytics would post every command's usage to dvc.org from each stage."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config.get("core", "analytics") == "false"
