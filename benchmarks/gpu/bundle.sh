#!/usr/bin/env bash
# `make gpu-bundle`: what the GPU suite carries to a lent device machine, in .gpu-bundle/ (git-ignored):
#   wheels/        the packages its image lacks (benchmarks/gpu/bundle_wheels.txt, pins from requirements.lock)
#   encoder-fp16/  the packaged MiniLM encoder in fp16 (45 MB instead of 91: the carry limit is 64 MiB with the
#                  working tree); benchmarks/gpu/suite.sh casts it back to fp32 on the device.
# The device runs CPython 3.12 on x86-64 with no network (/work/.library/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=.gpu-bundle
PY=${PY:-.venv/bin/python}
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/wheels"

pin() {  # the version requirements.lock pins for a distribution (names compared case- and _/- insensitively)
    awk -F'==' -v want="$1" 'BEGIN { gsub(/[-_]/, "", want); want = tolower(want) }
        { name = $1; gsub(/[-_]/, "", name); if (tolower(name) == want) { print $2; exit } }' requirements.lock
}

platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform any)

grep -v '^#' benchmarks/gpu/bundle_wheels.txt | while read -r dist _module; do
    [ -n "$dist" ] || continue
    version=$(pin "$dist")
    [ -n "$version" ] || { echo "gpu-bundle: $dist is not pinned in requirements.lock" >&2; exit 1; }
    if [ "$dist" = seqeval ]; then  # an sdist only on PyPI: build its (pure Python) wheel here
        "$PY" -m pip wheel -q --no-deps -w "$BUNDLE/wheels" "seqeval==$version"
    else
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d "$BUNDLE/wheels" "$dist==$version"
    fi
done

"$PY" - "$BUNDLE/encoder-fp16" <<'PY'
import sys

import torch
from transformers import AutoModel, AutoTokenizer

from tasks.basemodel import resolve_base_model

base = resolve_base_model("minilm")
model = AutoModel.from_pretrained(base, use_safetensors=True, dtype=torch.float16)
model.save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(base).save_pretrained(sys.argv[1])
PY

total=$(du -sb "$BUNDLE" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "gpu-bundle: $BUNDLE $((total / 1048576)) MiB + working tree $((tree / 1048576)) MiB (device limit 64 MiB)"
if [ $((total + tree)) -gt $((62 * 1048576)) ]; then
    echo "gpu-bundle: over 62 MiB with the working tree; the device call would be refused" >&2
    exit 1
fi
