"""Applying the plan: one deletion at a time, re-checked against racing writers, reported line by line; then
SeaweedFS compacts its volumes.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from flows.ops.gc.objects import DELETE_BATCH, Deletion, KeptBack, Report, human, logger
from flows.ops.gc.plan import collect
from tasks.params import GcParams
from tasks.settings import Settings, s3_client

# A promote checks that the version's manifest exists, then writes the alias (milliseconds apart). After
# deleting a manifest gc waits this long and reads the aliases again: a promote that passed its check just
# before the manifest went has written its alias by then, and the manifest is put back.
SETTLE_S = 2.0


def delete(client, deletion: Deletion) -> None:
    """Delete one planned item; S3 keys in order, the first alone (a version's manifest)."""
    if deletion.action is not None:
        deletion.action()
        return
    if deletion.path is not None:
        if deletion.path.is_dir():
            shutil.rmtree(deletion.path)
        else:
            deletion.path.unlink(missing_ok=True)
        return
    first, *rest = deletion.keys
    delete_first(client, deletion, first)
    for start in range(0, len(rest), DELETE_BATCH):
        batch = [{"Key": key} for key in rest[start:start + DELETE_BATCH]]
        errors = client.delete_objects(Bucket=deletion.bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors")
        if errors:
            first_error = errors[0]
            raise RuntimeError(f"{len(errors)} keys not deleted, the first {first_error.get('Key')}: "
                               f"{first_error.get('Message')}")


def delete_first(client, deletion: Deletion, key: str) -> None:
    """Delete the first key; with `confirm_after_first`, re-check after SETTLE_S and put it back if wanted."""
    if deletion.confirm_after_first is None:
        client.delete_object(Bucket=deletion.bucket, Key=key)
        return
    body = client.get_object(Bucket=deletion.bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=deletion.bucket, Key=key)
    time.sleep(SETTLE_S)
    reason = deletion.confirm_after_first()
    if reason:
        client.put_object(Bucket=deletion.bucket, Key=key, Body=body)
        raise KeptBack(reason)


def say(line: str) -> None:
    """One line to stdout (in a flow: the run's log, as the flow logs prints) and to `flowtune.gc` logging."""
    print(line, flush=True)
    logger.info(line)


def apply_one(client, deletion: Deletion, report: Report) -> None:
    line = f"{deletion.kind:<13} {human(deletion.size):>10}  {deletion.where}  ({deletion.reason})"
    skip = deletion.still_wanted() if deletion.still_wanted else None
    if skip:
        report.skipped.append(f"{deletion.where}: {skip}")
        say(f"kept          {line}: {skip}")
        return
    try:
        delete(client, deletion)
    except KeptBack as exc:
        report.skipped.append(f"{deletion.where}: {exc}")
        say(f"kept          {line}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - one failure must not stop the rest; it is reported and fails the run
        report.failed.append(f"{deletion.where}: {exc}")
        say(f"FAILED        {line}: {exc}")
        return
    say(f"deleted       {line}")


def vacuum(settings: Settings) -> None:
    """Ask the local SeaweedFS to compact volumes now: deleted objects free disk only then."""
    if settings.s3_endpoint_url:  # someone else's S3: it reclaims space on its own terms
        return
    from flows.ops.services import ServiceError, seaweedfs, weed_shell

    # The threshold must be explicit: without it a vacuum uses weed's built-in 0.3, not the master's
    # -master.garbageThreshold (measured: 20% deleted, nothing reclaimed). Same value as the flag.
    flag = next(f for f in seaweedfs(settings).command if f.startswith("-master.garbageThreshold="))
    threshold = flag.split("=")[1]
    try:
        weed_shell(settings, f"volume.vacuum -garbageThreshold {threshold}")
        say(f"SeaweedFS compacted its volumes with at least {threshold} garbage")
    except (ServiceError, OSError) as exc:
        say(f"SeaweedFS vacuum not possible ({exc}); its master compacts on its own within 15 min")


def run_gc(settings: Settings, rules: GcParams, root: Path = Path("."), *, apply: bool = False,
           now: datetime | None = None) -> Report:
    """Plan with the rules and print the plan (dry run), or delete it (`apply`); one line per item."""
    deletions, notes = collect(settings, rules, root, now or datetime.now(UTC))
    report = Report(deletions, apply, notes=notes)
    client = s3_client(settings)
    for note in notes:
        say(f"skipped       {note}")
    for deletion in report.deletions:
        if apply:
            apply_one(client, deletion, report)
        else:
            say(f"would delete  {deletion.kind:<13} {human(deletion.size):>10}  {deletion.where}  ({deletion.reason})")
    counts = ", ".join(f"{kind} {n} ({human(size)})" for kind, (n, size) in report.by_kind().items()) or "nothing"
    say(f"{'deleted' if apply else 'would delete'} {len(report.deletions)} items, {human(report.total)} in total: "
        f"{counts}" + ("" if apply else "  (dry run: `flowtune gc --apply` deletes)"))
    if apply and report.deletions:
        vacuum(settings)
    return report


def summary_markdown(report: Report) -> str:
    """The flow run's artifact: what was deleted, per kind, and what failed or was kept back."""
    rows = [f"| {kind} | {n} | {human(size)} |" for kind, (n, size) in report.by_kind().items()]
    done = len(report.deletions) - len(report.failed) - len(report.skipped)
    lines = ["# Storage garbage collection", "",
             f"Deleted {done} of {len(report.deletions)} planned items ({human(report.total)} planned).", "",
             "| kind | items | size |", "|---|---:|---:|", *rows, ""]
    lines += [f"- failed: {line}" for line in report.failed] + [f"- kept back: {line}" for line in report.skipped]
    lines += [f"- not applied: {line}" for line in report.notes]
    return "\n".join(lines) + "\n"


