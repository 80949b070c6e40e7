"""Where a flow run works: in the user's checkout, or in a clean checkout of its own.

- `in-place` (what `flowtune run` does): the current directory, like `dvc repro`. It reads ./params.yaml
  and the data DVC finds there.
- `isolated` (what deployed and scheduled runs do): a fresh `git clone` of this repository at a
  commit, under `<state_dir>/workspaces/<flow run id>/`, wired to the same DVC remote and sharing the
  DVC cache (content-addressed, so concurrent runs can share it safely). Two runs never touch each
  other's files nor the user's working tree. The workspace is deleted when the run succeeds and kept
  for inspection when it fails (its path is in the run's log).

Flow parameters choose *which* params file and data source, never hyperparameters: `params_file` is a
file of the checkout copied over its params.yaml (DVC tracks params.yaml), and `data_source` replaces
`ingest.source`; a path outside the checkout is first copied into its `data/external/` so that DVC
sees (and versions) the data the run used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import yaml

from tasks.params import load_params
from tasks.settings import Settings

Workspace = Literal["in-place", "isolated"]
MODES = get_args(Workspace)
DEFAULT_PARAMS = "params.yaml"
# Inside .dvc/tmp: git-ignored, per checkout, and next to DVC's own lock.
RUN_LOCK = Path(".dvc") / "tmp" / "flowtune-run.lock"
# The most a `data_source` outside the checkout may hold: each run copies it into its workspace, so a
# mistaken path (a home folder, a disk image) must fail at once rather than fill the disk.
MAX_DATA_SOURCE_BYTES = 50 * 2**30


class WorkspaceError(RuntimeError):
    """The workspace could not be prepared: a bad revision, params file or data source."""


class WorkspaceBusy(WorkspaceError):
    """Another flow run holds this checkout."""


def _lock_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "holder unknown"  # it has the lock but has not written its name yet
    return f"flow run {holder.get('flow_run_id')}, pid {holder.get('pid')}, since {holder.get('since')}"


@contextlib.contextmanager
def checkout_lock(repo: Path, run_id: str, timeout_s: float,
                  on_stale_holder: Callable[[dict], None] | None = None) -> Iterator[None]:
    """Hold the checkout for one flow run: an exclusive flock on `<repo>/.dvc/tmp/flowtune-run.lock`.

    DVC's own lock covers one command at a time; between two stages, or between train and registration,
    a second run in the same checkout could rebuild data or weights under the first. A second run waits
    up to `timeout_s`, then fails naming the holder. The kernel frees the lock when the holder dies, even
    by SIGKILL, so a crashed run never leaves the checkout locked. The descriptor is not inherited by
    stage processes (Python opens files non-inheritable).

    The holder is written into the file and erased on release, so a holder found there on acquiring
    died holding the lock: `on_stale_holder` gets it (e.g. to mark its flow run Crashed).
    """
    path = repo / RUN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(
                        f"{repo} is in use by another flowtune run ({_lock_holder(path)}); waited {timeout_s:.0f} s "
                        "(FLOWTUNE_RUN_LOCK_TIMEOUT_S). Let it finish or stop it, or run in an isolated workspace"
                    ) from None
                time.sleep(0.5)
        stale = _read_holder(handle)
        _write_holder(handle, {"flow_run_id": run_id, "pid": os.getpid(),
                               "since": datetime.now(UTC).isoformat(timespec="seconds")})
        if stale and on_stale_holder:
            on_stale_holder(stale)
        try:
            yield
        finally:
            _write_holder(handle, None)


def _read_holder(handle) -> dict | None:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "null")
    except ValueError:
        return None


def _write_holder(handle, holder: dict | None) -> None:
    handle.seek(0)
    handle.truncate()
    if holder:
        handle.write(json.dumps(holder))
    handle.flush()


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode:
        raise WorkspaceError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve_revision(repo: Path, revision: str) -> str:
    """The full commit id `revision` (branch, tag, sha, HEAD) names in `repo`."""
    try:
        # --end-of-options: a revision from a deployment parameter is never read as an option, even
        # one starting with "-" (the ^{commit} suffix already spoils such options; this says it to git).
        return git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
    except WorkspaceError:
        raise WorkspaceError(f"revision {revision!r} is not a commit of {repo}") from None


def checkout(repo: Path, commit: str, dest: Path) -> None:
    """A clean checkout of `commit` at `dest` (objects are hard-linked from `repo`: fast, small)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(dest.parent, "clone", "--quiet", "--no-checkout", str(repo.resolve()), dest.name)
    git(dest, "checkout", "--quiet", "--detach", commit)


def share_dvc_cache(workspace: Path, repo: Path) -> None:
    """Point the workspace's DVC cache at the user's: data pulled or built once is not copied again."""
    import configobj

    path = workspace / ".dvc" / "config.local"
    config = configobj.ConfigObj(str(path), write_empty_values=True)
    config.indent_type = "    "
    config.setdefault("cache", {})["dir"] = str((repo / ".dvc" / "cache").resolve())
    config.write()


def use_params_file(workspace: Path, params_file: str) -> None:
    """Make `params_file` (a file of the checkout) the workspace's params.yaml."""
    if params_file == DEFAULT_PARAMS:
        return
    chosen = workspace / params_file
    if not chosen.is_file() or not chosen.resolve().is_relative_to(workspace.resolve()):
        raise WorkspaceError(f"params_file {params_file!r} is not a file of the checked-out commit "
                             "(commit it, then run again)")
    shutil.copyfile(chosen, workspace / DEFAULT_PARAMS)


def use_data_source(workspace: Path, data_source: str) -> None:
    """Set `ingest.source`; a file or folder outside the checkout is copied into its data/external/."""
    params_path = workspace / DEFAULT_PARAMS
    params = yaml.safe_load(params_path.read_text())
    source = data_source
    outside = Path(data_source).expanduser()
    if outside.is_absolute():
        if not outside.exists():
            raise WorkspaceError(f"data_source {data_source!r} does not exist")
        external = workspace / params["paths"]["external"] / outside.name
        check_data_source(outside)
        copy = shutil.copytree if outside.is_dir() else shutil.copyfile
        copy(outside, external)  # copytree follows the links: check_data_source allowed only files inside
        source = str(external.relative_to(workspace))
    params["ingest"]["source"] = source
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def check_data_source(source: Path, limit: int = MAX_DATA_SOURCE_BYTES) -> None:
    """Refuse a data source to copy that is over `limit` bytes, or a folder holding a symbolic link other than
    to a file inside it (a link out, e.g. to ~/.ssh, would be copied into the workspace and on to DVC)."""
    root = source.resolve()
    size = 0
    for path in [source] if source.is_file() else sorted(source.rglob("*")):  # rglob does not enter linked folders
        if path.is_symlink() and not (path.is_file() and path.resolve().is_relative_to(root)):
            raise WorkspaceError(f"data_source {source}: {path} is a symbolic link to {path.resolve()}, outside "
                                 "the folder or not a file; copy the data in instead of linking it")
        size += path.stat().st_size if path.is_file() else 0
        if size > limit:
            shown = f"{limit / 2**30:g} GiB" if limit >= 2**30 else f"{limit} bytes"
            raise WorkspaceError(f"data_source {source} holds over {shown}, the most a run copies into "
                                 "its workspace (flows.orchestration.workspace.MAX_DATA_SOURCE_BYTES); track the "
                                 "data with DVC inside the checkout and pass its path there instead")


def prepare(repo: Path, workspace: Path, commit: str, params_file: str, data_source: str | None,
            settings: Settings) -> None:
    """Check out `commit`, give it this checkout's settings and DVC remote, apply the parameters."""
    from flows.ops.services import ENV_FILE, private_dir, wire_dvc_remote, write_private

    private_dir(settings.state_dir.resolve())  # the workspaces get a copy of .env: keep other users out
    checkout(repo, commit, workspace)
    if (repo / ENV_FILE).exists():  # same services and credentials (git-ignored, so not in the clone)
        write_private(workspace / ENV_FILE, (repo / ENV_FILE).read_text())
    wire_dvc_remote(settings, workspace)
    share_dvc_cache(workspace, repo)
    use_params_file(workspace, params_file)
    if data_source:
        use_data_source(workspace, data_source)
    load_params(workspace / DEFAULT_PARAMS)  # a bad params file fails here, before any stage runs


@contextlib.contextmanager
def run_workspace(mode: Workspace, run_id: str, settings: Settings, *, revision: str = "HEAD",
                  params_file: str = DEFAULT_PARAMS, data_source: str | None = None,
                  on_stale_holder: Callable[[dict], None] | None = None) -> Iterator[Path]:
    """Work in the chosen workspace (the process's current directory for the duration).

    Changing directory is safe: a worker runs each flow run in a process of its own. An in-place run
    holds the checkout (`checkout_lock`, which passes a dead holder to `on_stale_holder`).
    """
    repo = Path.cwd()
    if mode not in MODES:
        raise WorkspaceError(f"workspace must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "in-place":
        if params_file != DEFAULT_PARAMS or data_source:
            raise WorkspaceError("params_file and data_source apply to an isolated workspace only: an in-place "
                                 "run reads ./params.yaml, as `dvc repro` does (pass workspace='isolated')")
        with checkout_lock(repo, run_id, settings.run_lock_timeout_s, on_stale_holder):
            yield repo
        return
    workspace = settings.state_dir.resolve() / "workspaces" / run_id
    if workspace.exists():  # a retried run starts again from a clean checkout
        shutil.rmtree(workspace)
    try:
        prepare(repo, workspace, resolve_revision(repo, revision), params_file, data_source, settings)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)  # no half-prepared checkout is left behind
        raise
    os.chdir(workspace)
    try:
        yield workspace
    except BaseException:
        os.chdir(repo)
        raise  # the workspace stays for inspection
    os.chdir(repo)
    shutil.rmtree(workspace)
