#!/usr/bin/env bash
# Show pid, url and health of each local service (exit 1 if one is unhealthy).
# See infra/local/README.md. Runs from the repository root, where .env and .dvc/ live.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
command -v "$python" >/dev/null || python=python3
exec "$python" -m flows.ops.services status "$@"
