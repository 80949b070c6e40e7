"""`flowtune registry ...`: the registry and its models from the command line (predictions: flows/cli/predict.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.settings import Settings


@contextlib.contextmanager
def one_line_errors(command: str) -> Iterator[None]:
    """What the user can fix (an unknown model, version or alias, a malformed input file, storage that is
    down or refuses the keys) ends the command with one line naming it and exit status 1, no traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    from flows.ops.storage import StorageError, storage_problem
    from flows.registry import RegistryError
    from tasks.io import InputFormatError

    try:
        yield
    except (RegistryError, StorageError, InputFormatError) as exc:
        sys.exit(f"flowtune {command}: error: {exc}")
    except (BotoCoreError, ClientError) as exc:  # storage failed after the first check
        settings = Settings()
        sys.exit(f"flowtune {command}: error: {storage_problem(settings, settings.registry_bucket, exc)}")


def print_table(header: list[str], rows: list[list]) -> None:
    """A plain aligned text table (readable in a terminal and in logs)."""
    cells = [header] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def version_row(registry, name: str, version: int, aliases: dict[str, int]) -> list:
    metadata = registry.manifest(name, version)["metadata"]
    metrics, training = metadata.get("metrics", {}), metadata.get("training", {})
    f1 = metrics.get("f1")
    return [f"v{version}", None if f1 is None else f"{f1:.4f}", ",".join(a for a, v in aliases.items() if v == version),
            (metadata.get("registered_at") or "")[:19], training.get("device"),
            (metadata.get("git") or {}).get("commit", "")[:10] if metadata.get("git") else None]


def cmd_list(registry, args) -> None:
    if not args.name:
        names = registry.models()
        rows = [[name, len(registry.versions(name)), registry.get_alias(name, "champion")] for name in names]
        print_table(["model", "versions", "champion"], rows)
        return
    aliases = registry.aliases(args.name)
    rows = [version_row(registry, args.name, v, aliases) for v in registry.versions(args.name)]
    print_table(["version", "F1 (headline)", "aliases", "registered (UTC)", "trained on", "commit"], rows)


def cmd_show(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    manifest = registry.manifest(name, version)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return
    metadata = manifest["metadata"]
    metrics = metadata.get("metrics", {})
    aliases = [a for a, v in registry.aliases(name).items() if v == version]
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"{name} v{version}   aliases: {', '.join(aliases) or '-'}   "
          f"{len(manifest['files'])} files, {size / 1e6:.1f} MB")
    print(f"registered {metadata.get('registered_at')}   flow run {(metadata.get('flow_run') or {}).get('url')}")
    print(f"git {(metadata.get('git') or {}).get('commit')}   training {metadata.get('training', {}).get('device')}, "
          f"{metadata.get('training', {}).get('train_seconds')} s")
    if metrics:  # eval.json's layout, either today's or that of versions registered before EvalReport
        from tasks.metrics import EvalReport

        report = EvalReport.model_validate(metrics)
        score = report.headline
        print(f"\n{score.name} {score.value:.4f}  precision {score.precision:.4f}  recall {score.recall:.4f}  "
              f"on {report.count} {report.units}")
        rows = [[name, f"{m.precision:.4f}", f"{m.recall:.4f}", f"{m.f1:.4f}", m.support]
                for name, m in sorted(report.groups.items())]
        print_table([report.group, "precision", "recall", "F1", "support"], rows)
    print_variants(manifest)
    gate = metadata.get("gate")
    if gate:
        print(f"\ngate: {'promote' if gate['promote'] else 'reject'}")
        for reason in gate["reasons"]:
            print(f"  - {reason}")


def print_variants(manifest: dict) -> None:
    """The version's compressed variants, with the numbers the compress stage measured for them."""
    from flows.registry import variants_in

    held = variants_in(manifest)
    table = manifest["metadata"].get("compression") or {}
    measured = {row["variant"]: row for row in table.get("rows", [])}
    if not held:
        print("\nvariants: none" + ("" if table else " (registered before the compress stage)"))
        return
    print(f"\nvariants (CPU, {table.get('threads')} threads; pull or serve one with --variant NAME):")
    rows = [[name, *_variant_numbers(measured.get(name, {}))] for name in ["fp32", *held]]
    print_table(["variant", table.get("score_name", "score"), "p50 ms", "p95 ms", "speedup", "MB"], rows)


def _variant_numbers(row: dict) -> list:
    if not row:
        return ["-"] * 5
    return [f"{row['score']:.4f}", row["p50_ms"], row["p95_ms"], f"{row['speedup']}x" if row["speedup"] else "-",
            row["size_mb"]]


def cmd_promote(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    before = registry.get_alias(name, args.alias)
    registry.set_alias(name, args.alias, version, expected=before)  # fails if someone moved it meanwhile
    print(f"{name}: alias {args.alias} -> v{version} (was {'v' + str(before) if before else 'unset'})")


def cmd_rollback(registry, args) -> None:
    from flows.registry import split_ref

    name, _ = split_ref(args.name)
    before = registry.get_alias(name, args.alias)
    version = registry.rollback(name, args.alias, expected=before)
    print(f"{name}: alias {args.alias} rolled back v{before} -> v{version}")


def cmd_pull(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    registry.download(name, version, Path(args.dest), variant=args.variant, force=args.force)
    what = f"{name} v{version}" + (f" variant {args.variant}" if args.variant else "")
    print(f"{what} -> {args.dest} (checksums verified)")


ACTIONS = {"list": cmd_list, "show": cmd_show, "promote": cmd_promote, "rollback": cmd_rollback,
           "pull": cmd_pull, "fetch": cmd_pull}


def cmd_registry(args: argparse.Namespace) -> int:
    from flows.ops.storage import open_registry  # here: botocore loads only for a command that needs storage

    with one_line_errors(f"registry {args.action}"):
        ACTIONS[args.action](open_registry(), args)
    return 0


def add_registry_parser(sub) -> None:
    reg = sub.add_parser("registry", help="list, show, promote, roll back or pull registered models")
    actions = reg.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="models, or the versions of one model")
    listing.add_argument("name", nargs="?", help="a model: list its versions (default: list the models)")
    show = actions.add_parser("show", help="one version: metrics, lineage, gate decision")
    show.add_argument("ref", help="NAME, NAME@VERSION or NAME:ALIAS (default alias: champion)")
    show.add_argument("--json", action="store_true", help="the raw manifest")
    promote = actions.add_parser("promote", help="point an alias (default champion) at a version")
    promote.add_argument("ref", help="NAME@VERSION")
    promote.add_argument("--alias", default="champion", help="the alias to move")
    rollback = actions.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("name", help="the model")
    rollback.add_argument("--alias", default="champion", help="the alias to move back")
    for action in ("pull", "fetch"):
        pull = actions.add_parser(action, help="download a version (checksums verified)" if action == "pull"
                                  else "same as pull")
        pull.add_argument("ref", help="NAME, NAME@VERSION or NAME:ALIAS")
        pull.add_argument("--dest", default="model", help="the folder to fill; a non-empty folder that no earlier "
                                                           "pull created is refused (default: model)")
        pull.add_argument("--force", action="store_true", help="replace --dest even if it holds files of your own")
        pull.add_argument("--variant", help="only this compressed variant of the version (e.g. onnx-int8; "
                                            "`registry show` lists them), as a model folder of its own")
    reg.set_defaults(func=cmd_registry)
