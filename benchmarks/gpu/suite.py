"""The GPU suite's steps (benchmarks/gpu_suite.sh runs this): every GPU row of docs/BENCHMARKS.md in one run.

Steps, each independent (one that fails is reported and the next still runs), results in `--out`:
  env         GPU name, driver, torch / CUDA / transformers versions, bf16 support.
  speed       the train stage for a fixed number of optimizer steps, fp32 and bf16 autocast, beside the HF
              Trainer recipe (benchmarks/train_speed.py: same data, seed, steps): tokens/s, samples/s, peak GPU
              memory, MFU (6 x non-embedding parameters per token, against the card's dense bf16 peak); bf16 at
              larger batches too, to find where the small encoder stops being launch-bound.
  training    one short full training on WNUT-17 official splits (2 epochs) in bf16 and fp32 with test F1, and
              the Trainer recipe beside it: the GPU path's correctness and bf16-vs-fp32 parity, not only speed.
  latency     forward-pass latency of the model the evaluate and compress stages run, fp32 vs bf16 autocast vs
              fp16 weights, at batch 1 and 32.
  serve       `flowtune serve` on the GPU: 32 clients vs one (benchmarks/serve_throughput.py's measure).
Writes results.json (every number) and summary.md (the tables to paste into docs/BENCHMARKS.md, "GPU").

`--cpu-dry-run` runs the same steps on the CPU with a tiny random encoder and a few sentences, so the suite
cannot rot before a GPU is lent (tests/integration/test_gpu_suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "data" / "external" / "wnut17"
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of the device name; the
# first match wins, so the PCIe H100 comes before the SXM one.
BF16_PEAKS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("A100", 312e12),
              ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12)]


def log(message: str) -> None:
    print(f"[gpu-suite {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Plan:
    """What a run does: the full GPU plan or the CPU dry run's miniature of it (same steps, same code)."""

    def __init__(self, args: argparse.Namespace):
        self.dry = args.cpu_dry_run
        self.out: Path = args.out
        self.encoder: Path = args.encoder
        self.device = "cpu" if self.dry else "cuda"
        self.steps = 2 if self.dry else args.steps                # optimizer steps per speed run
        self.speed_batches = [4] if self.dry else [32, 128, 256]  # bf16 batch sizes (the first also in fp32)
        self.epochs = 1 if self.dry else 2                        # the full training
        self.limits = ["--sentences", "8", "--dev-limit", "8", "--test-limit", "8"] if self.dry else []
        self.latency_repeats = 2 if self.dry else 50
        self.clients, self.requests = (4, 2) if self.dry else (32, 20)


# ---------------------------------------------------------------- steps


def step_env(plan: Plan) -> dict:
    import tokenizers
    import torch
    import transformers

    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
             "cpus": os.cpu_count(), "device": plan.device}
    if plan.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        facts |= {"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
                  "multiprocessors": properties.multi_processor_count, "bf16": torch.cuda.is_bf16_supported(),
                  "bf16_peak_tflops": (peak_flops(properties.name) or 0) / 1e12 or None,
                  "driver": nvidia_smi("--query-gpu=driver_version")}
    return facts


def nvidia_smi(query: str) -> str | None:
    try:
        return subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAKS if key in device_name), None)


def train_speed(plan: Plan, name: str, modes: list[str], precision: str, batch: int, sentences: int | None,
                epochs: int) -> list[dict]:
    """One benchmarks/train_speed.py run (each mode in its own process); its raw results."""
    out = plan.out / "raw" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--modes", *modes,
               "--device", plan.device, "--epochs", str(epochs), "--batch-size", str(batch), "--out", str(out),
               f"--set=base_model={plan.encoder}", f"--set=precision={precision}"]
    command += ["--threads", str(os.cpu_count() or 1)]
    if plan.dry:
        command += plan.limits
    elif sentences is not None:
        command += ["--sentences", str(sentences)]
    log(f"{name}: {' '.join(command[2:])}")
    with open(plan.out / "suite.log", "a", encoding="utf-8") as sink:
        subprocess.run(command, cwd=ROOT, stdout=sink, stderr=sink, check=True)
    return json.loads(out.read_text(encoding="utf-8"))["results"]


def non_embedding_parameters(encoder: Path) -> int:
    """The encoder's parameters outside the embedding tables: what a token's forward pass multiplies by."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(encoder, use_safetensors=True)
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def speed_row(result: dict, precision: str, batch: int, parameters: int, peak: float | None) -> dict:
    samples = result["train_sentences"] * result.get("epochs", 1) / result["train_seconds"]
    tokens = result["tokens_per_second"]
    return {"mode": result["mode"], "precision": precision, "batch": batch, "tokens_per_s": tokens,
            "samples_per_s": samples, "peak_gpu_mib": result.get("peak_gpu_mib"),
            "mfu": 6 * parameters * tokens / peak if peak else None, "test_f1": result["test_f1"]}


def step_speed(plan: Plan) -> dict:
    import torch

    peak = peak_flops(torch.cuda.get_device_properties(0).name) if plan.device == "cuda" else None
    parameters = non_embedding_parameters(plan.encoder)
    rows = []
    for precision in ("fp32", "bf16"):
        batch = plan.speed_batches[0]
        for result in train_speed(plan, f"speed-{precision}-{batch}", ["flowtune", "hf-trainer"], precision, batch,
                                  plan.steps * batch, 1):
            rows.append(speed_row(result, precision, batch, parameters, peak))
    for batch in plan.speed_batches[1:]:  # where the small encoder stops being launch-bound
        for result in train_speed(plan, f"speed-bf16-{batch}", ["flowtune"], "bf16", batch, plan.steps * batch, 1):
            rows.append(speed_row(result, "bf16", batch, parameters, peak))
    return {"non_embedding_parameters": parameters, "bf16_peak_flops": peak, "steps": plan.steps, "rows": rows}


def step_training(plan: Plan) -> dict:
    bf16 = train_speed(plan, "training-bf16", ["flowtune", "hf-trainer"], "bf16", 32, None, plan.epochs)
    fp32 = train_speed(plan, "training-fp32", ["flowtune"], "fp32", 32, None, plan.epochs)
    rows = [{"mode": r["mode"], "precision": precision, "train_seconds": r["train_seconds"],
             "tokens_per_s": r["tokens_per_second"], "dev_f1": r["dev_f1"], "test_f1": r["test_f1"]}
            for precision, results in (("bf16", bf16), ("fp32", fp32)) for r in results]
    flowtune = {row["precision"]: row for row in rows if row["mode"] == "flowtune"}
    return {"epochs": plan.epochs, "rows": rows,
            "bf16_minus_fp32_test_f1": flowtune["bf16"]["test_f1"] - flowtune["fp32"]["test_f1"]}


def tagger(plan: Plan, dest: Path) -> Path:
    """The encoder with a random 13-label head (WNUT-17's BIO labels): what a trained tagger costs to run."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    if not dest.is_dir():
        labels = ["O"] + [f"{p}-{t}" for t in ("corporation", "creative-work", "group", "location", "person",
                                                "product") for p in "BI"]
        model = AutoModelForTokenClassification.from_pretrained(
            plan.encoder, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, use_safetensors=True)
        model.save_pretrained(dest)
        AutoTokenizer.from_pretrained(plan.encoder).save_pretrained(dest)
    return dest


def test_sentences() -> list[str]:
    from tasks.kinds.ner.records import read_records

    return [" ".join(r.tokens) for r in read_records(DATA / "test.conll", "conll", "iob2")]


def timed_forward(model, batch: dict, repeats: int, dtype) -> list[float]:
    import torch

    device = next(model.parameters()).device
    timings = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(repeats + 3):  # three warm-ups
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**batch).logits.float().cpu()
            if i >= 3:
                timings.append((time.perf_counter() - start) * 1000)
    return timings


def step_latency(plan: Plan) -> dict:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tagger(plan, plan.out / "work" / "tagger")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = test_sentences()
    settings = [("fp32", None, torch.float32), ("bf16 autocast", torch.bfloat16, torch.float32)]
    if plan.device == "cuda":
        settings.append(("fp16 weights", None, torch.float16))
    rows = []
    for name, autocast_dtype, weights in settings:
        model = AutoModelForTokenClassification.from_pretrained(folder, dtype=weights, use_safetensors=True)
        model = model.to(plan.device).eval()
        for size in (1, 32):
            batch = tokenizer(texts[:size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt").to(plan.device)
            timings = timed_forward(model, dict(batch), plan.latency_repeats, autocast_dtype)
            rows.append({"setting": name, "batch": size, "median_ms": statistics.median(timings),
                         "max_ms": max(timings)})
    base = {row["batch"]: row["median_ms"] for row in rows if row["setting"] == "fp32"}
    for row in rows:
        row["speedup"] = base[row["batch"]] / row["median_ms"]
    return {"repeats": plan.latency_repeats, "rows": rows}


def step_serve(plan: Plan) -> dict:
    from benchmarks.serve_throughput import measure

    folder = tagger(plan, plan.out / "work" / "tagger")
    texts = test_sentences()
    rows = []
    for batch, wait_ms in ((1, 0.0), (32, 5.0)):
        result = measure(folder, batch, wait_ms, texts, plan.clients, plan.requests)
        rows.append({"max_batch_size": batch, "max_wait_ms": wait_ms, **result})
    return {"clients": plan.clients, "requests": plan.requests, "rows": rows}


STEPS = {"env": step_env, "speed": step_speed, "training": step_training, "latency": step_latency,
         "serve": step_serve}


# ---------------------------------------------------------------- report


def number(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary(results: dict) -> str:
    parts = ["# GPU suite", ""]
    env = results.get("env", {}).get("result") or {}
    parts.append(", ".join(f"{key} {value}" for key, value in env.items()) or "environment: not read")
    for name, entry in results.items():
        if entry["status"] != "ok":
            parts += ["", f"**{name}: {entry['status']}** ({entry.get('error', '')})"]
    if "rows" in (speed := results.get("speed", {}).get("result") or {}):
        parts += ["", f"## Training speed ({speed['steps']} optimizer steps, WNUT-17 train)", "",
                  table(["mode", "precision", "batch", "tokens/s", "samples/s", "peak GPU MiB", "MFU"],
                        [[r["mode"], r["precision"], str(r["batch"]), number(r["tokens_per_s"], 0),
                          number(r["samples_per_s"]), number(r["peak_gpu_mib"], 0),
                          f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"] for r in speed["rows"]])]
    if "rows" in (training := results.get("training", {}).get("result") or {}):
        parts += ["", f"## Short training ({training['epochs']} epochs, WNUT-17 official splits)", "",
                  table(["mode", "precision", "train s", "tokens/s", "dev F1", "test F1"],
                        [[r["mode"], r["precision"], number(r["train_seconds"]), number(r["tokens_per_s"], 0),
                          f"{r['dev_f1']:.4f}", f"{r['test_f1']:.4f}"] for r in training["rows"]]),
                  "", f"bf16 - fp32 test F1 (flowtune): {training['bf16_minus_fp32_test_f1']:+.4f}"]
    if "rows" in (latency := results.get("latency", {}).get("result") or {}):
        parts += ["", f"## Forward latency (median of {latency['repeats']})", "",
                  table(["setting", "batch", "median ms", "max ms", "vs fp32"],
                        [[r["setting"], str(r["batch"]), number(r["median_ms"], 2), number(r["max_ms"], 2),
                          f"{r['speedup']:.2f}x"] for r in latency["rows"]])]
    if "rows" in (serve := results.get("serve", {}).get("result") or {}):
        parts += ["", f"## Serve ({serve['clients']} clients x {serve['requests']} requests of one sentence)", "",
                  table(["max batch", "requests/s", "p50 ms", "p95 ms", "single-client p95 ms", "items/pass"],
                        [[str(r["max_batch_size"]), number(r["rps"]), number(r["p50"], 0), number(r["p95"], 0),
                          number(r["single_p95"], 0), number(r["items_per_pass"])] for r in serve["rows"]])]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="the base encoder folder (fp32)")
    parser.add_argument("--cpu-dry-run", action="store_true")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per speed run (GPU)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS))
    args = parser.parse_args(argv)
    plan = Plan(args)
    plan.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in args.only:
        started = time.monotonic()
        log(f"step {name}")
        try:
            results[name] = {"status": "ok", "result": STEPS[name](plan)}
        except Exception as exc:  # noqa: BLE001 - one broken step must not cost the others' numbers
            traceback.print_exc()
            results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
        results[name]["seconds"] = round(time.monotonic() - started, 1)
        log(f"step {name}: {results[name]['status']} in {results[name]['seconds']} s")
        (plan.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
        (plan.out / "summary.md").write_text(summary(results), encoding="utf-8")
    print(summary(results))
    return 0 if all(entry["status"] == "ok" for entry in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
