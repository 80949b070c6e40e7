"""The GPU suite imports only what the lent device has: its image's packages plus the bundled wheels
(benchmarks/gpu/device_packages.txt, benchmarks/gpu/bundle_wheels.txt). A new top-level import of, say,
boto3 in the train or serve path would break the suite on the device, where nothing can be installed."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu.suite import BF16_PEAKS, peak_flops, speed_row, summary

ROOT = Path(__file__).resolve().parents[2]
# What the suite runs: the train and evaluate stages, the NER kind, `flowtune serve` of a model folder.
SUITE_MODULES = ["benchmarks.gpu.suite", "benchmarks.train_speed", "benchmarks.serve_throughput", "tasks.train",
                 "tasks.evaluate", "tasks.kinds.ner.kind", "tasks.kinds.ner.training", "tasks.engine", "flows.cli.main",
                 "flows.cli.serve", "flows.serving.app", "flows.serving.predictors"]


def names(path: Path, column: int) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split()[column] for line in lines if line.strip() and not line.startswith("#")}


def our_modules_loaded_by(modules: list[str]) -> list[str]:
    """The files of flowtune's own modules that importing `modules` loads (in a fresh interpreter)."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
            "    if n.split('.')[0] in ('tasks', 'flows', 'benchmarks') and getattr(m, '__file__', None))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def module_level_imports(path: str) -> set[str]:
    """Top-level names a file imports when it loads (not inside functions: those run only when called;
    libraries' own optional imports, such as transformers probing for boto3, are theirs to guard)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.slow
def test_suite_imports_only_what_the_device_has():
    allowed = (names(ROOT / "benchmarks/gpu/device_packages.txt", 0)
               | names(ROOT / "benchmarks/gpu/bundle_wheels.txt", 1))
    ours = {"tasks", "flows", "benchmarks", "tests"}
    imported = set().union(*(module_level_imports(path) for path in our_modules_loaded_by(SUITE_MODULES)))
    missing = imported - allowed - ours - set(sys.stdlib_module_names)
    assert not missing, f"the GPU suite would import {sorted(missing)}, which the device does not have"


def test_bf16_peak_by_device_name():
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # before the SXM entry: the first match wins
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("Some Future GPU") is None
    assert [key for key, _ in BF16_PEAKS].index("H100 PCIe") < [key for key, _ in BF16_PEAKS].index("H100")


def test_mfu_is_six_flops_per_parameter_and_token_against_the_peak():
    result = {"mode": "flowtune", "train_sentences": 320, "train_seconds": 2.0, "tokens_per_second": 10_000.0,
              "peak_gpu_mib": 900.0, "test_f1": 0.4}
    row = speed_row(result, "bf16", 32, parameters=1_000_000, peak=1e12)
    assert row["mfu"] == pytest.approx(6 * 1_000_000 * 10_000 / 1e12)
    assert row["samples_per_s"] == pytest.approx(160.0)
    assert speed_row(result, "bf16", 32, parameters=1_000_000, peak=None)["mfu"] is None


def test_summary_names_a_failed_step_and_keeps_the_others():
    results = {"env": {"status": "ok", "result": {"device": "cuda"}},
               "speed": {"status": "failed", "error": "RuntimeError: CUDA out of memory"},
               "latency": {"status": "ok", "result": {"repeats": 5, "rows": [
                   {"setting": "fp32", "batch": 1, "median_ms": 2.0, "max_ms": 3.0, "speedup": 1.0}]}}}
    text = summary(results)
    assert "**speed: failed** (RuntimeError: CUDA out of memory)" in text
    assert "| fp32 | 1 | 2.00 | 3.00 | 1.00x |" in text
