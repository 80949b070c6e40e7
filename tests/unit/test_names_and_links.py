"""Names and links that come from users or deployment parameters: registry names and aliases (they
become S3 keys) and the revision handed to git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows.orchestration import workspace
from flows.orchestration.workspace import WorkspaceError, resolve_revision
from flows.registry import RegistryError, check_alias, check_name

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


@pytest.mark.parametrize("name", ["ner\n", "ner\r\n", "ner/x", "../ner", "a..b", "Ner", "", "x" * 65])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        check_name(name)


@pytest.mark.parametrize("alias", ["champion\n", "champion\r\n", "champion/x", "1st", "Champion", "", "a" * 33])
def test_bad_aliases_are_refused(alias: str) -> None:
    with pytest.raises(RegistryError, match="invalid alias"):
        check_alias(alias)


@pytest.mark.parametrize("name", ["ner\n", "a..b", "My Model"])
def test_a_bad_model_name_in_params_fails_when_params_load(name: str, tmp_path: Path) -> None:
    """Not after an hour of training, at the registration step: the first stage to load params says so."""
    import yaml

    from tasks.params import ParamsError, load_params
    from tests.helpers import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"]["model_name"] = name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"params\.yaml: registry\.model_name: Value error, invalid model name"):
        load_params(tmp_path / "params.yaml")


def test_good_names_and_aliases_pass_unchanged() -> None:
    assert check_name("ner-wnut17.v2") == "ner-wnut17.v2" and check_alias("champion") == "champion"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "file.txt").write_text("x\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(GIT + ["commit", "-qm", "one"], cwd=repo, check=True)
    return repo


@pytest.mark.parametrize("option", ["--upload-pack=touch {marker}", "--output={marker}", "--git-dir={marker}"])
def test_a_revision_that_looks_like_an_option_is_only_a_bad_revision(repo: Path, tmp_path: Path, option: str):
    marker = tmp_path / "marker"
    with pytest.raises(WorkspaceError, match="is not a commit of"):
        resolve_revision(repo, option.format(marker=marker))
    assert not marker.exists()


def test_git_is_told_where_the_options_end(repo: Path, monkeypatch) -> None:
    """The ^{commit} suffix already spoils an option; `--end-of-options` makes git itself refuse to read one."""
    calls: list[tuple[str, ...]] = []
    real_git = workspace.git
    monkeypatch.setattr(workspace, "git", lambda where, *args: calls.append(args) or real_git(where, *args))
    head = resolve_revision(repo, "HEAD")
    assert len(head) == 40
    [args] = calls
    assert args[-2:] == ("--end-of-options", "HEAD^{commit}")
