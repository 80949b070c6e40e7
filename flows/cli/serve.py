"""`flowtune serve`: the command line of the HTTP service (flows/serving/)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.cli.registry import one_line_errors
    from flows.ops.storage import open_registry
    from flows.registry import local_variant, variant_files
    from flows.serving.app import serve
    from flows.serving.guards import TokenError, read_token
    from flows.serving.limits import Limits

    if args.max_batch_size < 1 or args.max_wait_ms < 0 or args.poll_s <= 0:
        raise SystemExit("flowtune serve: error: --max-batch-size >= 1, --max-wait-ms >= 0 and --poll-s > 0")
    if min(args.max_batch_words, args.max_queue_words) < 1 or min(args.timeout_s, args.grace_s) <= 0:
        raise SystemExit("flowtune serve: error: --max-batch-words and --max-queue-words >= 1, --timeout-s and "
                         "--grace-s > 0")
    try:
        token = read_token(args.token_file, args.host)
    except TokenError as exc:
        raise SystemExit(f"flowtune serve: error: {exc}") from None
    limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_batch_words, args.max_queue_words,
                    args.timeout_s, args.max_unready_s, token)
    capture = capture_config(args)
    registry = None
    with one_line_errors("serve"):  # what the user can fix (no such model or variant, storage down) stops it here
        if Path(args.model).is_dir():
            local_variant(Path(args.model), args.variant)
        else:
            registry = open_registry()
            name, version = registry.resolve(args.model)
            if args.variant:
                variant_files(registry.manifest(name, version), args.variant, f"{name} v{version}")
    serve(args.model, args.host, args.port, args.poll_s, args.max_length, lambda: registry, args.variant, limits,
          args.grace_s, capture)
    return 0


def capture_config(args: argparse.Namespace):
    """`serve.capture` of the params file with the command line's overrides; None when capture is off.

    The params file is read only for that section (a key of another step never stops the service). Without
    the file, capture stays off unless `--capture` asks for it, which then needs the file: it holds the
    buffer's sizes, which have no second home in code.
    """
    from flows.serving.capture import CaptureConfig
    from tasks.settings import Settings

    section = read_capture_section(Path(args.params_file), required=bool(args.capture))
    if section is None or not (section.enabled if args.capture is None else args.capture):
        return None
    sample = section.sample if args.capture_sample is None else args.capture_sample
    if not 0 <= sample <= 1:
        raise SystemExit(f"flowtune serve: error: --capture-sample {sample:g}: expected a share from 0 to 1")
    redact = section.redact if args.capture_redact is None else args.capture_redact
    try:
        Settings().secret_key()  # the writes need keys: say so now, not in a warning after the start
    except RuntimeError as exc:
        raise SystemExit(f"flowtune serve: error: --capture: {exc}") from None
    return CaptureConfig(section.bucket or Settings().capture_bucket, sample, redact, section.max_buffer_items,
                         section.flush_items, section.flush_s, close_s=args.grace_s)


def read_capture_section(path: Path, required: bool):
    """`serve.capture` of `path` (CaptureParams); None when the file is absent and nothing requires it.
    Errors name the file and the key."""
    import yaml
    from pydantic import ValidationError

    from tasks.params import CaptureParams

    if not path.is_file():
        if required:
            raise SystemExit(f"flowtune serve: error: --capture reads `serve.capture` from {path}, which does not "
                             "exist: give --params-file (the checkout's params.yaml)")
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        section = ((raw or {}).get("serve") or {}).get("capture") if isinstance(raw, dict) else None
    except (yaml.YAMLError, AttributeError) as exc:
        raise SystemExit(f"flowtune serve: error: {path}: not a params file ({exc})".splitlines()[0]) from None
    if section is None:
        if required:
            raise SystemExit(f"flowtune serve: error: {path}: no `serve.capture` section (see params.yaml)")
        return None
    try:
        return CaptureParams.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(f"serve.capture.{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"]
                             else e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise SystemExit(f"flowtune serve: error: {path}: {problems}") from None


def add_serve_parser(sub) -> None:
    from flows.serving.limits import Limits

    serve = sub.add_parser("serve", help="serve a registered model (or a model folder) over HTTP: /v1/predict, "
                                         "/healthz, /readyz, /metrics, /docs; follows its alias (hot swap)")
    serve.add_argument("--model", required=True, help="NAME:ALIAS (followed: a new version is swapped in), "
                                                      "NAME@VERSION, NAME (its latest version) or a model folder")
    serve.add_argument("--variant", help="serve this compressed variant of the model (int8, onnx, onnx-int8, student: "
                                         "those its version holds, see `registry show`)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine "
                                                           "only; 0.0.0.0 offers it to the network and needs a token)")
    serve.add_argument("--token-file", help="a file holding the bearer token every request but /healthz and /readyz "
                                            "must carry (default: $FLOWTUNE_SERVE_TOKEN; required off loopback)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind")
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="items (texts or sentences) per forward pass, across concurrent requests")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="how long the first queued request waits for others to share its forward pass")
    serve.add_argument("--max-batch-words", type=int, default=Limits.max_batch_words,
                       help="words per forward pass: bounds each pass's time, so a small request never waits "
                            "long behind a large one")
    serve.add_argument("--max-queue-words", type=int, default=Limits.max_queue_words,
                       help="words waiting for the model; a request that would pass this gets 429 + Retry-After")
    serve.add_argument("--timeout-s", type=float, default=Limits.timeout_s,
                       help="a request not answered within this gets 503 and its remaining work is dropped")
    serve.add_argument("--grace-s", type=float, default=10.0,
                       help="on SIGTERM: how long requests in progress may finish before they are cancelled")
    serve.add_argument("--max-unready-s", type=float, default=Limits.max_unready_s,
                       help="/healthz answers 503 once no model has loaded for this long (an orchestrator restarts "
                            "the process)")
    serve.add_argument("--poll-s", type=float, default=30.0, help="how often the alias is checked for a new version")
    serve.add_argument("--max-length", type=int, help="sub-word pieces per window (default: the model's own)")
    serve.add_argument("--params-file", default="params.yaml",
                       help="where `serve.capture` is read (default ./params.yaml; absent: capture off)")
    serve.add_argument("--capture", action=argparse.BooleanOptionalAction, default=None,
                       help="record answered requests to the capture bucket (default: serve.capture.enabled)")
    serve.add_argument("--capture-sample", type=float, help="share of answered items recorded, 0 to 1 "
                                                            "(default: serve.capture.sample)")
    serve.add_argument("--capture-redact", action=argparse.BooleanOptionalAction, default=None,
                       help="record statistics only, without the text and the answer (default: serve.capture.redact)")
    serve.set_defaults(func=cmd_serve)
