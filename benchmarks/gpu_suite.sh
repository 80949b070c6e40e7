#!/usr/bin/env bash
# The GPU suite: every GPU row of docs/BENCHMARKS.md in one command of at most ~8 minutes (issue #39).
#
# On a lent device machine (a bare image with torch and transformers, no network, no project install; the
# working tree travels with `.gpu-bundle` carried, built here by `make gpu-bundle`):
#     bash benchmarks/gpu_suite.sh            # results under $OUT: summary.md, results.json, suite.log
# Here, the same steps on the CPU with a tiny encoder (tests/integration/test_gpu_suite.py runs it):
#     bash benchmarks/gpu_suite.sh --cpu-dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/flowtune-gpu-suite}
mkdir -p "$OUT/work"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" = "--cpu-dry-run" ]; then
    PY=${PY:-.venv/bin/python}
    export CUDA_VISIBLE_DEVICES=""
    encoder="$OUT/work/tiny-encoder"
    "$PY" -c "import sys; from tests.helpers import tiny_encoder; tiny_encoder(__import__('pathlib').Path(sys.argv[1]))" \
        "$encoder"
    exec "$PY" benchmarks/gpu/suite.py --cpu-dry-run --out "$OUT" --encoder "$encoder"
fi

PY=${PY:-python3}
if [ ! -d .gpu-bundle/wheels ] || [ ! -d .gpu-bundle/encoder-fp16 ]; then
    echo "gpu_suite: no .gpu-bundle here: run \`make gpu-bundle\` on the dev machine and carry .gpu-bundle" >&2
    exit 2
fi
# The image's own torch/transformers stay; only what it lacks is installed, beside it, not over it.
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/flowtune-site \
    .gpu-bundle/wheels/*.whl
export PYTHONPATH="$PYTHONPATH:/tmp/flowtune-site"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
encoder="$OUT/work/encoder"
"$PY" - .gpu-bundle/encoder-fp16 "$encoder" <<'PY'
import sys

import torch
from transformers import AutoModel, AutoTokenizer

# The bundle's fp16 copy, cast back: training and the fp32 rows start from fp32 weights as on the dev machine.
model = AutoModel.from_pretrained(sys.argv[1], dtype=torch.float16, use_safetensors=True).float()
model.save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
PY
exec "$PY" benchmarks/gpu/suite.py --out "$OUT" --encoder "$encoder" "$@"
