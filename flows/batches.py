"""A new batch of labelled data into the source folder, and a Prefect event saying so (`flowtune data add FILE`,
flows/cli/data.py; the labelling loop's pull, flows/labelling/).

The batch is read with the kind's own reader first (a file ingest would refuse is refused here, nothing
copied), then copied into `<source>/batches/` atomically (a hidden temporary file, then a link that fails
if the name appeared meanwhile), never over another file. Then `flowtune.data.changed` is sent to the
Prefect API, when one answers: an automation (created by `flowtune deploy`) may start training on it. The
source folder lives under data/external/ (`paths.external`), the ingest stage's DVC dependency, so the
next `dvc repro` (or pipeline run) re-imports with the new batch (docs/DECISIONS.md, 60).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from flows.names import DATA_CHANGED_EVENT, model_resource_id
from tasks.settings import Settings


class DataError(ValueError):
    """A batch or source folder `data add` refuses; the message says why and what to do."""


@dataclass(frozen=True)
class Added:
    """What `data add` did: the batch's place in the source folder, its rows and checksum."""

    path: Path
    rows: int
    sha256: str
    copied: bool  # False: the same file was there already (nothing copied; the event is sent again)
    commit: str | None = None  # with --commit: the git commit that holds the batch


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def source_folder(params, source: str | None) -> Path:
    """The folder batches go to: --source, or the params' `ingest.source` when that is a folder."""
    from tasks.params import BUILTIN_SOURCE

    if source is None and params.ingest.source == BUILTIN_SOURCE:
        raise DataError(f"ingest.source is the builtin {BUILTIN_SOURCE!r} set, not a folder: pass --source DIR, or "
                        "point ingest.source at a folder under data/external/ "
                        "(docs/tutorials/ner-own-data.md, 'Add data later')")
    folder = Path(source or params.ingest.source)
    if folder.is_file():
        raise DataError(f"{folder} is a single file; batches need a source folder: move the file into a folder "
                        "(e.g. data/external/mine/first.conll) and point ingest.source at the folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (create it, or pass --source)")
    return folder


def check_batch(file: Path, folder: Path, params, kind) -> int:
    """The batch's row count, after the checks ingest would make: a type the kind reads, no reader error,
    and no name clash with the folder's other batch files (their record ids would collide)."""
    from tasks.sources import BATCHES

    if not file.is_file():
        raise DataError(f"{file}: no such file")
    if file.suffix.lower() not in kind.source_suffixes:
        raise DataError(f"{file}: ingest reads batch files of type {', '.join(kind.source_suffixes)}; a "
                        f"{file.suffix or 'suffix-less'} file would be ignored")
    rows = kind.source_reader(params.ingest)(file)  # InputFormatError names the file and line
    target = folder / BATCHES / file.name
    clash = next((p for p in existing_batches(folder, kind) if p.stem == file.stem and p != target), None)
    if clash is not None:
        raise DataError(f"{file.name}: the source already has {clash}, the same name but for its type; record ids "
                        "are made from file names, so give the new batch another name")
    return len(rows)


def existing_batches(folder: Path, kind) -> list[Path]:
    """The files ingest reads in `folder` now, official splits too (a batch named like one would carry the
    same record ids); none when it has no data yet (the first batch)."""
    from tasks.io import InputFormatError
    from tasks.sources import source_files

    try:
        layout = source_files(folder, kind.source_suffixes)
    except InputFormatError:  # an empty folder, or official splits missing one: ingest says which
        return []
    return [*layout.official.values(), *layout.batches]


def copy_batch(file: Path, folder: Path, digest: str, subfolder: str | None = None) -> tuple[Path, bool]:
    """Copy `file` into `<folder>/batches/` (or `subfolder`: label pull's corrections) under its name; (its path
    there, whether it was copied). The same content already there is no change; different content under that name
    is refused."""
    from tasks.sources import BATCHES

    target = folder / (subfolder or BATCHES) / file.name
    if target.exists():
        if sha256_of(target) == digest:
            return target, False
        raise DataError(f"{target} exists with different content (sha256 {sha256_of(target)[:12]}..., the new file "
                        f"{digest[:12]}...); a batch is never replaced: give the new one another name")
    target.parent.mkdir(exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # hidden: ingest never reads it
    try:
        with file.open("rb") as src, staging.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(staging, target)  # atomic, and fails if another `data add` took the name meanwhile
    except FileExistsError:
        raise DataError(f"{target} appeared while copying; run `flowtune data add` again") from None
    finally:
        staging.unlink(missing_ok=True)
    return target, True


def add_batch(file: Path, params, source: str | None = None) -> Added:
    """Validate, then copy a batch into the source folder (see the module's docstring)."""
    from tasks.kinds import kind_for

    folder = source_folder(params, source)
    rows = check_batch(file, folder, params, kind_for(params))
    digest = sha256_of(file)
    target, copied = copy_batch(file, folder, digest)
    return Added(target, rows, digest, copied)


def commit_batch(added: Added) -> Added:
    """Commit the batch file alone (`git commit -- <file>`: whatever else is staged stays out): a deployed run
    works in a clean clone of a commit (flows/orchestration/workspace.py), so only a committed batch reaches it."""
    import dataclasses
    import subprocess

    path, message = str(added.path), f"data: add batch {added.path.name} ({added.rows} rows)"
    for command in (["git", "add", "--", path], ["git", "commit", "-q", "-m", message, "--", path]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise DataError(f"the batch is added but not committed: `{' '.join(command)}` failed: "
                            f"{(result.stderr or result.stdout).strip()[:300]}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return dataclasses.replace(added, commit=head)


def send_data_changed(settings: Settings, model_name: str, added: Added) -> str:
    """Send `flowtune.data.changed` about `model_name` when a Prefect API answers; what happened, in a line.

    Prefect's own client (as `prefect event emit` does), not `emit_event`: that queues the event on a
    background worker which logs a failure and moves on, and this command must say whether it was sent."""
    from flows.ops.services import prefect_check, service_env

    try:
        prefect_check(settings)
    except Exception as exc:  # noqa: BLE001 - no API (or a refusal): the batch is added, only no event
        return (f"no event sent: no usable Prefect API at {settings.api_url} ({type(exc).__name__}: {exc}); "
                "`flowtune services up` starts one, or run the pipeline yourself")
    os.environ.update(service_env(settings))  # before Prefect's settings load, as for `flowtune run`
    import asyncio

    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(event=DATA_CHANGED_EVENT,
                  resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name},
                  payload={"file": added.path.as_posix(), "rows": added.rows, "sha256": added.sha256,
                           "commit": added.commit})

    async def send() -> None:
        async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
            await client.emit(event)  # checkpoint_every=1: returns once the server has acknowledged it

    asyncio.run(send())
    return f"event {DATA_CHANGED_EVENT} sent for model {model_name} ({event.id})"
