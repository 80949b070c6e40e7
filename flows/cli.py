"""The `flowtune` command line: services, pipeline runs, the registry and predictions."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tasks.settings import Settings


def _prefect_env(settings: Settings) -> None:
    """Point this process's Prefect client at our server before Prefect is imported."""
    from flows.services import service_env

    os.environ.update(service_env(settings))


def cmd_run(args: argparse.Namespace) -> int:
    settings = Settings()
    _prefect_env(settings)
    from flows.pipeline import ner_pipeline

    state = ner_pipeline(push=not args.no_push, return_state=True)
    run_url = f"{settings.ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
    print("\n=== flowtune run finished:", state.type.value)
    print(f"Prefect UI (flow run): {run_url}")
    if state.is_completed():
        result = state.result()
        print(f"Registered model:      {result['model']} v{result['version']} "
              f"(s3://{settings.registry_bucket}/{settings.registry_prefix}/{result['model']}/{result['version']}/, "
              "alias champion)")
    else:
        print(f"Reason:                {state.message}")
    print("Metrics:               dvc metrics show   (details: data/metrics/eval.json)")
    return 0 if state.is_completed() else 1


def _registry(settings: Settings):
    from tasks.registry import Registry
    from tasks.settings import s3_client

    return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


def _resolve_version(registry, name: str, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    version = registry.get_alias(name, ref)
    if version is None:
        raise SystemExit(f"model {name!r} has no alias {ref!r}")
    return version


def cmd_registry(args: argparse.Namespace) -> int:
    registry = _registry(Settings())
    if args.action == "list":
        champion = registry.get_alias(args.name, "champion")
        for version in registry.versions(args.name):
            f1 = registry.manifest(args.name, version)["metadata"]["metrics"]["f1"]
            print(f"{args.name} v{version}  f1={f1:.4f}{'  (champion)' if version == champion else ''}")
        return 0
    version = _resolve_version(registry, args.name, args.ref)
    if args.action == "show":
        print(json.dumps(registry.manifest(args.name, version), indent=2))
    else:
        registry.download(args.name, version, Path(args.dest))
        print(f"{args.name} v{version} -> {args.dest}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.modeling import predict_tags

    model_dir = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if not model_dir.is_dir():
            name, _, ref = args.model.partition("@")
            registry = _registry(Settings())
            model_dir = registry.download(name, _resolve_version(registry, name, ref or "champion"), Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        sentences = [line.split() for line in (args.text or sys.stdin.read().splitlines()) if line.strip()]
        for tokens, tags in zip(sentences, predict_tags(model, tokenizer, sentences, 32, 128), strict=True):
            print(" ".join(f"{tok}/{tag}" for tok, tag in zip(tokens, tags, strict=True)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="start/stop/inspect local SeaweedFS + Prefect server", add_help=False)
    run = sub.add_parser("run", help="run the whole pipeline as a Prefect flow in this checkout (reads ./params.yaml)")
    run.add_argument("--no-push", action="store_true", help="do not dvc push at the end")
    run.set_defaults(func=cmd_run)
    reg = sub.add_parser("registry", help="list, show or fetch registered models")
    reg.add_argument("action", choices=["list", "show", "fetch"])
    reg.add_argument("name")
    reg.add_argument("ref", nargs="?", default="champion", help="version number or alias")
    reg.add_argument("--dest", default="model")
    reg.set_defaults(func=cmd_registry)
    pred = sub.add_parser("predict", help="tag whitespace-tokenized sentences")
    pred.add_argument("--model", required=True, help="a model directory or NAME[@VERSION|@ALIAS]")
    pred.add_argument("text", nargs="*", help="sentences (default: one per line on stdin)")
    pred.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["services"]:
        from flows.services import services_main

        return services_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
