"""`flowtune serve`: the command line of the HTTP service (flows/serving/)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.registry_cli import one_line_errors, open_registry
    from flows.serving.app import serve
    from tasks.registry import local_variant, variant_files

    if args.max_batch_size < 1 or args.max_wait_ms < 0 or args.poll_s <= 0:
        raise SystemExit("flowtune serve: error: --max-batch-size >= 1, --max-wait-ms >= 0 and --poll-s > 0")
    registry = None
    with one_line_errors("serve"):  # what the user can fix (no such model or variant, storage down) stops it here
        if Path(args.model).is_dir():
            local_variant(Path(args.model), args.variant)
        else:
            registry = open_registry()
            name, version = registry.resolve(args.model)
            if args.variant:
                variant_files(registry.manifest(name, version), args.variant, f"{name} v{version}")
    serve(args.model, args.host, args.port, args.max_batch_size, args.max_wait_ms, args.poll_s, args.max_length,
          lambda: registry, args.variant)
    return 0


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="serve a registered model (or a model folder) over HTTP: /v1/predict, "
                                         "/healthz, /readyz, /metrics, /docs; follows its alias (hot swap)")
    serve.add_argument("--model", required=True, help="NAME:ALIAS (followed: a new version is swapped in), "
                                                      "NAME@VERSION, NAME (its latest version) or a model folder")
    serve.add_argument("--variant", help="serve this compressed variant of the model (int8, onnx, onnx-int8, student: "
                                         "those its version holds, see `registry show`)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine "
                                                           "only; 0.0.0.0 offers it to the network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="items (texts or sentences) per forward pass, across concurrent requests")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="how long the first queued request waits for others to share its forward pass")
    serve.add_argument("--poll-s", type=float, default=30.0, help="how often the alias is checked for a new version")
    serve.add_argument("--max-length", type=int, help="sub-word pieces per window (default: the model's own)")
    serve.set_defaults(func=cmd_serve)
