"""Training-speed levers, one at a time: the optimizer step time of MiniLM on the same real batches.

Usage:
    .venv/bin/python benchmarks/train_levers.py                    # every lever, 24 timed steps each
    .venv/bin/python benchmarks/train_levers.py --levers baseline frozen-embeddings --steps 8

Each lever runs in its own subprocess on the same length-grouped batches of WNUT-17 train sentences
(batch 32, as `benchmarks/train_speed.py`), with the engine's own pieces: fused AdamW without decay on
biases and LayerNorm (`tasks.engine.build_optimizer`), the summed cross-entropy over first pieces, gradient
clipping. The first steps (and, for `compile`, the compilation) are not timed. Prints a markdown table:
the median step time, real tokens/s, and the ratio to `baseline` measured in the same run, with the CPU
flags (bf16 and int8 gains depend on them). Speed only: a lever that pays off must then hold test F1 over
seeds with `benchmarks/train_speed.py`.

- baseline: fp32, all cores.
- frozen-embeddings: the 30k-row word-embedding matrix (11.7M of MiniLM's 22.7M weights) gets no gradient
  and no optimizer update.
- frozen-1-layer, frozen-2-layers: `train.freeze_layers` 1 or 2: the embeddings and the lowest encoder layers
  get no gradient, so the backward pass stops above them.
- bf16: `torch.autocast("cpu", torch.bfloat16)` around forward and loss.
- compile: `torch.compile(model, dynamic=True)`.
- one-thread: `torch.set_num_threads(1)`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVERS = ("baseline", "frozen-embeddings", "frozen-1-layer", "frozen-2-layers", "bf16", "compile", "one-thread")
BATCH = 32
WARMUP_STEPS = 3


def cpu_flags() -> str:
    """The CPU's vector-extension flags that matter for bf16 and int8 (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
    return " ".join(flag for flag in wanted if flag in flags.split()) or "no AVX2"


def batches(tokenizer, steps: int) -> list[dict]:
    """`steps` batches of similar-length real sentences (as length-grouped training sees them), padded."""
    import torch

    from tasks.kinds.ner.records import read_records

    records = read_records(ROOT / "data/external/wnut17/train.conll", "conll", "iob2")
    encoded = [tokenizer(list(r.tokens), is_split_into_words=True, truncation=True, max_length=128) for r in records]
    encoded.sort(key=lambda e: len(e["input_ids"]))
    # Evenly spread over the length range, so short and long batches both count.
    starts = [round(i * (len(encoded) - BATCH) / max(1, steps - 1)) for i in range(steps)]
    out = []
    for start in starts:
        group = encoded[start:start + BATCH]
        padded = tokenizer.pad({"input_ids": [e["input_ids"] for e in group]}, return_tensors="pt")
        first = torch.zeros_like(padded["input_ids"], dtype=torch.long).fill_(-100)
        for row, item in enumerate(group):
            previous = None
            for position, word in enumerate(item.word_ids()):
                if word is not None and word != previous:
                    first[row, position] = (word * 7 + row) % 13  # a label per first piece; timing only
                previous = word
        out.append({**padded, "labels": first})
    return out


def run_lever(lever: str, steps: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.basemodel import resolve_base_model
    from tasks.engine import build_optimizer
    from tasks.trainable import freeze_lowest_layers

    torch.manual_seed(13)
    if threads:
        torch.set_num_threads(threads)
    if lever == "one-thread":
        torch.set_num_threads(1)
    base = resolve_base_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(base, num_labels=13, use_safetensors=True)
    model.train()
    if lever == "frozen-embeddings":
        model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    if lever.startswith("frozen-") and lever != "frozen-embeddings":
        freeze_lowest_layers(model, int(lever.split("-")[1]))
    optimizer = build_optimizer(model, 2e-4, 0.01)
    runner = torch.compile(model, dynamic=True) if lever == "compile" else model
    data = batches(tokenizer, WARMUP_STEPS + steps)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="sum")
    times, pieces = [], 0
    compile_s = 0.0
    for index, batch in enumerate(data):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lever == "bf16"):
            logits = runner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = loss_fn(logits.float().flatten(0, 1), batch["labels"].flatten()) / 400.0
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if index < WARMUP_STEPS:
            compile_s += elapsed
            continue
        times.append(elapsed)
        pieces += int(batch["attention_mask"].sum())
    return {"lever": lever, "median_step_s": statistics.median(times), "tokens_per_s": pieces / sum(times),
            "warmup_s": compile_s, "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--steps", type=int, default=24, help="timed optimizer steps per lever")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every lever (0 = all cores)")
    parser.add_argument("--worker", choices=LEVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_lever(args.worker, args.steps, args.threads)))
        return 0
    levers = ["baseline", *[lever for lever in args.levers if lever != "baseline"]]
    results = {}
    for lever in levers:
        print(f"{lever} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--worker", lever, "--steps", str(args.steps),
                              "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[lever] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["baseline"]["tokens_per_s"]
    print(f"CPU flags: {cpu_flags()}; torch {results['baseline']['torch']}; batch {BATCH}; {args.steps} timed steps\n")
    print("| lever | median step s | real tokens/s | vs baseline | untimed first steps s | threads |")
    print("|---|---:|---:|---:|---:|---:|")
    for lever, row in results.items():
        print(f"| {lever} | {row['median_step_s']:.3f} | {row['tokens_per_s']:,.0f} | "
              f"{row['tokens_per_s'] / base:.2f}x | {row['warmup_s']:.1f} | {row['threads']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
