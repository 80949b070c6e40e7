"""flows.orchestration.workspace on a throwaway git repository: clean checkouts, parameter files, data sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.orchestration.workspace import WorkspaceError, run_workspace
from tasks.settings import Settings
from tests.helpers import ROOT

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A git repo with this project's params.yaml and .dvc/config, one commit, and a user's .env."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text())
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (repo / "params.small.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text(".env\n.flowtune/\n.dvc/config.local\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(GIT + ["commit", "-qm", "one"], cwd=repo, check=True)
    (repo / ".env").write_text("FLOWTUNE_S3_ACCESS_KEY_ID=k\nFLOWTUNE_S3_SECRET_ACCESS_KEY=s\n")
    return repo


def settings_for(repo: Path) -> Settings:
    return Settings(_env_file=repo / ".env", state_dir=repo / ".flowtune")


@pytest.fixture()
def inside(repo: Path):
    previous = Path.cwd()
    os.chdir(repo)
    yield repo
    os.chdir(previous)


def test_isolated_run_gets_a_clean_checkout_with_remote_cache_and_settings(inside: Path):
    (inside / "params.yaml").write_text("uncommitted: edit\n")  # the user's work in progress
    with run_workspace("isolated", "run-1", settings_for(inside)) as where:
        assert Path.cwd() == where == (inside / ".flowtune/workspaces/run-1").resolve()
        assert "uncommitted" not in (where / "params.yaml").read_text()  # the commit, not the working tree
        local = (where / ".dvc/config.local").read_text()
        assert "endpointurl" in local and str((inside / ".dvc/cache").resolve()) in local
        assert (where / ".env").stat().st_mode & 0o777 == 0o600
    assert Path.cwd() == inside and not where.exists()  # removed after success


def test_a_failed_run_keeps_its_workspace_for_inspection(inside: Path):
    with pytest.raises(RuntimeError, match="stage failed"), run_workspace("isolated", "run-2", settings_for(inside)):
        raise RuntimeError("stage failed")
    assert Path.cwd() == inside and (inside / ".flowtune/workspaces/run-2/params.yaml").exists()


def test_params_file_and_data_source_are_applied(inside: Path, tmp_path: Path):
    incoming = tmp_path / "incoming" / "tweets"
    incoming.mkdir(parents=True)
    (incoming / "train.conll").write_text("john\tB-person\n\n")
    with run_workspace("isolated", "run-3", settings_for(inside), params_file="params.small.yaml",
                       data_source=str(incoming)) as where:
        params = yaml.safe_load((where / "params.yaml").read_text())
        assert params["train"]["epochs"] == 1
        assert params["ingest"]["source"] == "data/external/tweets"
        assert (where / "data/external/tweets/train.conll").read_text() == "john\tB-person\n\n"


@pytest.mark.parametrize(("options", "message"), [
    ({"revision": "no-such-branch"}, "revision 'no-such-branch' is not a commit"),
    ({"params_file": "params.missing.yaml"}, "params_file 'params.missing.yaml' is not a file"),
    ({"params_file": "../../etc/passwd"}, "is not a file of the checked-out commit"),
    ({"data_source": "/no/such/data.conll"}, "data_source '/no/such/data.conll' does not exist"),
])
def test_bad_parameters_fail_before_any_stage_with_a_clear_message(inside: Path, options: dict, message: str):
    with pytest.raises(WorkspaceError, match=message), run_workspace("isolated", "bad", settings_for(inside),
                                                                     **options):
        pytest.fail("the workspace should not be entered")
    assert Path.cwd() == inside and not (inside / ".flowtune/workspaces/bad").exists()


def test_in_place_runs_read_the_checkout_and_refuse_overrides(inside: Path):
    with run_workspace("in-place", "here", settings_for(inside)) as where:
        assert where == inside
    with pytest.raises(WorkspaceError, match="isolated workspace only"), \
            run_workspace("in-place", "here", settings_for(inside), params_file="params.small.yaml"):
        pass
    with pytest.raises(WorkspaceError, match="must be one of"), run_workspace("elsewhere", "x", settings_for(inside)):
        pass


def test_only_the_train_stage_holds_the_accelerator_slot():
    from contextlib import nullcontext

    from flows.orchestration.steps import holding_accelerator

    assert isinstance(holding_accelerator("evaluate"), nullcontext)
    assert not isinstance(holding_accelerator("train"), nullcontext)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from flows.orchestration.workspace import checkout_lock
with checkout_lock(Path(sys.argv[1]), "run-holder", 5):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock_in_another_process(repo: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(repo)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_in_place_run_waits_then_names_the_holder(repo: Path):
    from flows.orchestration.workspace import WorkspaceBusy, checkout_lock

    holder = hold_lock_in_another_process(repo)
    try:
        expected = rf"in use by another flowtune run \(flow run run-holder, pid {holder.pid}"
        with pytest.raises(WorkspaceBusy, match=expected):
            with checkout_lock(repo, "run-2", timeout_s=1.0):
                pytest.fail("the lock was taken twice")
    finally:
        holder.kill()
        holder.wait()
    stale: list[dict] = []
    with checkout_lock(repo, "run-3", timeout_s=5.0, on_stale_holder=stale.append):  # SIGKILL left no lock
        assert "run-3" in (repo / ".dvc" / "tmp" / "flowtune-run.lock").read_text()
    assert [(h["flow_run_id"], h["pid"]) for h in stale] == [("run-holder", holder.pid)]  # it died holding it
    with checkout_lock(repo, "run-4", timeout_s=5.0, on_stale_holder=stale.append):  # run-3 released cleanly
        pass
    assert len(stale) == 1 and (repo / ".dvc" / "tmp" / "flowtune-run.lock").read_text() == ""


def test_an_in_place_run_holds_the_checkout_for_its_whole_duration(inside: Path):
    from flows.orchestration.workspace import WorkspaceBusy, checkout_lock

    with run_workspace("in-place", "first", settings_for(inside)):
        with pytest.raises(WorkspaceBusy, match="flow run first"), checkout_lock(inside, "second", timeout_s=0.5):
            pass
    with checkout_lock(inside, "third", timeout_s=0.5):  # released at the end of the run
        pass


def data_workspace(tmp_path: Path) -> Path:
    """A workspace holding only what `use_data_source` reads: its params.yaml."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return workspace


def test_a_data_source_holding_a_link_out_of_it_is_refused_by_name_and_nothing_is_copied(tmp_path: Path):
    from flows.orchestration.workspace import use_data_source

    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    source = tmp_path / "incoming" / "corpus"
    source.mkdir(parents=True)
    (source / "dev.conll").write_text("a\tO\n")
    (source / "train.conll").symlink_to(secret)
    workspace = data_workspace(tmp_path)
    with pytest.raises(WorkspaceError) as caught:
        use_data_source(workspace, str(source))
    assert str(caught.value) == (f"data_source {source}: {source / 'train.conll'} is a symbolic link to {secret}, "
                                 "outside the folder or not a file; copy the data in instead of linking it")
    assert not (workspace / "data" / "external").exists()


def test_a_data_source_with_a_link_to_a_folder_is_refused_and_a_link_to_its_own_file_copied(tmp_path: Path):
    from flows.orchestration.workspace import check_data_source, use_data_source

    source = tmp_path / "corpus"
    (source / "splits").mkdir(parents=True)
    (source / "splits" / "train.conll").write_text("a\tO\n")
    (source / "train.conll").symlink_to(source / "splits" / "train.conll")
    use_data_source(data_workspace(tmp_path), str(source))
    assert (tmp_path / "workspace/data/external/corpus/train.conll").read_text() == "a\tO\n"
    (source / "loop").symlink_to(source)  # copytree would follow it round and round
    with pytest.raises(WorkspaceError, match=r"loop is a symbolic link to .*not a file"):
        check_data_source(source)


def test_a_data_source_over_the_size_limit_is_refused_before_copying(tmp_path: Path):
    from flows.orchestration.workspace import MAX_DATA_SOURCE_BYTES, check_data_source

    source = tmp_path / "big"
    source.mkdir()
    (source / "train.conll").write_bytes(b"a\tO\n" * 300)
    check_data_source(source, limit=1200)  # exactly the limit: accepted
    (source / "dev.conll").write_bytes(b"b\tO\n")
    limit = r"flows\.orchestration\.workspace\.MAX_DATA_SOURCE_BYTES"
    with pytest.raises(WorkspaceError, match=rf"data_source .*big holds over 1200 bytes, the most a run copies into "
                                             rf"its workspace \({limit}\)"):
        check_data_source(source, limit=1200)
    assert MAX_DATA_SOURCE_BYTES >= 10 * 2**30  # generous: real corpora of several GB still go through
