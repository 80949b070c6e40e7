"""`flowtune gc`: delete what the retention rules (`gc:` in params.yaml) no longer keep.

Everything flowtune writes has a rule (docs/DECISIONS.md 29):

- failed runs' workspaces `<state_dir>/workspaces/<flow run id>/`: older than `keep_days`;
- registry claims with no manifest (a registration that died) and the files it uploaded: older than
  `grace_hours`; the highest claim of a model stays, so version numbers are never reused;
- registry versions: kept are the newest `keep_versions`, those younger than `keep_version_days`, every
  alias's target and the last `alias_history` versions it pointed at (rollback keeps working); the rest
  go with their model cards, manifest first, so a version vanishes for readers in one step;
- Data Docs `s3://<reports>/data-docs/<run id>/` and run folders `s3://<dvc>/flowtune-runs/<run id>/`:
  older than `keep_days`, unless the run produced a kept version (its lineage `flow_run.id`);
- DVC objects (cache `files/md5/` and the remote's): those no kept record needs, older than `grace_hours`.
  Kept records: the checkout's dvc.lock and .dvc files, kept workspaces' dvc.lock, kept versions'
  lineage `dvc_lock`, kept run folders' dvc.lock and run-cache entries younger than `keep_days`. A
  run-cache entry that names a deleted object is deleted with it (DVC could not restore it anyway);
- Prefect flow runs in a final state that ended more than `prefect_keep_days` ago (with their artifacts;
  their logs go with the server's orphan vacuum), through the Prefect API, unless a kept version names
  the run; skipped, in one line, when no Prefect API answers;
- service logs `<state_dir>/logs/*.log` past `log_max_mb`: rotated to `.1` .. `.log_keep`, older copies
  dropped (`services up` rotates them too, before a service starts);
- sweep plots `s3://<reports>/sweeps/<study>/<run id>/` older than `keep_days`, but the newest of a study
  that a params file or a kept version names; studies of the Optuna journal that nothing names and that
  saw no trial for `keep_days` (the journal is rewritten without them, under its lock, never while a
  trial runs);
- captured serving traffic `s3://<capture>/<model>/<day>/` (`flowtune serve --capture`): objects older than
  `capture_keep_days`.

Not covered: `serve NAME@N` pins: a fixed version
is recorded nowhere, so gc cannot see it; only aliases keep a version (checked again just before, and
just after, its manifest is deleted).

A dry run (the default) prints each deletion with its size, and the total; `apply=True` deletes and
logs one line per deletion. The `flowtune-gc` flow runs it with `apply=True` (weekly deployment `gc`).
"""
