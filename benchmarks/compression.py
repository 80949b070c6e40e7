"""What the compressed variants buy: the forward pass at batch 1, fp32 PyTorch vs each variant, same sentences.

Usage:
    .venv/bin/python benchmarks/compression.py [--model data/models/candidate] [--threads 2] [--rounds 3]

The sentences are WNUT-16 test sentences of 20-64 sub-word pieces, tokenized beforehand: only the
forward pass is timed (the compress stage's latency, in data/metrics/compression.json, includes
tokenization and the kind's decoding). Every model runs with the same intra-op thread count; rounds
alternate the models so that a slow minute of the machine hits all of them. Prints the CPU flags int8
depends on (VNNI, AVX-512) and a markdown table: p50/p95 ms and the speedup of the p50 against fp32.
Without a trained --model folder, a MiniLM tagger with a random head stands in (the same forward cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIECES = (20, 64)  # the band of real sentence lengths, [CLS] and [SEP] included


def batches(model_dir: Path, count: int) -> list[dict[str, torch.Tensor]]:
    from transformers import AutoTokenizer

    from benchmarks.serve_throughput import sentences

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chosen = []
    for text in sentences():
        encoded = tokenizer([text], return_tensors="pt")
        if PIECES[0] <= encoded["input_ids"].shape[1] <= PIECES[1]:
            chosen.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    return chosen[:count]


def time_once(model, inputs: list[dict[str, torch.Tensor]]) -> list[float]:
    times = []
    with torch.inference_mode():
        for batch in inputs:
            started = time.perf_counter()
            model(**batch)
            times.append((time.perf_counter() - started) * 1000)
    return times


def measure(models: dict[str, object], inputs: list[dict[str, torch.Tensor]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        time_once(model, inputs[:5])  # warm-up: first-call allocations, onnxruntime's arena
    for _ in range(rounds):
        for name, model in models.items():
            times[name] += time_once(model, inputs)
    return times


def table(times: dict[str, list[float]]) -> str:
    base = statistics.median(times["fp32"])
    lines = ["| model | p50 ms | p95 ms | speedup (p50) |", "|---|---|---|---|"]
    for name, values in times.items():
        p50, p95 = statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]
        lines.append(f"| {name} | {p50:.2f} | {p95:.2f} | {base / p50:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    from benchmarks.serve_throughput import random_head_tagger
    from tasks.compress import cpu_flags
    from tasks.kinds.saved import head_class
    from tasks.kinds.saved import load_saved_model as load_model
    from tasks.variants import FROM_CANDIDATE, build, export_onnx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/candidate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model if args.model.is_dir() else random_head_tagger(Path(tmp) / "model")
        exported = Path(tmp) / "export.onnx"
        export_onnx(load_model(model_dir, device="cpu"), exported)
        head = head_class(model_dir)
        folders = {"fp32": model_dir} | {name: build(name, model_dir, Path(tmp) / name, exported, auto_class=head)
                                         for name in FROM_CANDIDATE}
        models = {name: load_model(folder, device="cpu") for name, folder in folders.items()}
        inputs = batches(model_dir, args.sentences)
        times = measure(models, inputs, args.rounds)
    print(f"model: {'random-head MiniLM tagger' if model_dir != args.model else args.model}; {len(inputs)} sentences "
          f"of {PIECES[0]}-{PIECES[1]} pieces x {args.rounds} rounds, batch 1, {args.threads} threads; "
          f"torch {torch.__version__}; CPU flags: {' '.join(cpu_flags()) or 'none'}\n")
    print(table(times))


if __name__ == "__main__":
    main()
