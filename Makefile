# The README's quickstart: `make run` (whole pipeline, services included) and `make test`.
.PHONY: setup run test test-fast services-up services-down lint docs docs-serve gpu-bundle

setup:
	@bash infra/local/bootstrap.sh

run: setup
	.venv/bin/flowtune services up
	.venv/bin/flowtune run

# Two workers, whole files per worker; the two long e2e runs (tests/lanes.py) run in pytest-xdist's controller
# from the start, beside the workers, and their tests come last (docs/DECISIONS.md 37 and 79). A third worker
# bought nothing: the suite is CPU-bound on two cores (measured, DECISIONS 79).
TEST_WORKERS ?= 2
test: setup
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/stack --durations=25

# Every test not marked `slow` (those train real models, clone the repo or start services of their own).
test-fast: setup
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/python infra/k8s/validate.py   # the Kubernetes manifests: strict schemas, offline, and their wiring
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet   # the docs site: no broken link, no page left out of the nav

services-up: setup
	.venv/bin/flowtune services up

services-down: setup
	.venv/bin/flowtune services down

# What benchmarks/gpu_suite.sh carries to a lent GPU machine (wheels its image lacks, the encoder in fp16).
gpu-bundle: setup
	PY=.venv/bin/python bash benchmarks/gpu/bundle.sh

# The documentation site (mkdocs.yml): pages in docs/, the reference generated from the code at build time
# (docs/hooks/reference.py). Offline; `docs-serve` rebuilds on save. Port 8010: 8000 is `flowtune serve`'s.
DOCS_PORT ?= 8010
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
	@echo "site built in site/; browse it with \`make docs-serve\` (http://127.0.0.1:$(DOCS_PORT))"

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

# Every image infra/compose uses, built here from a debootstrap base (no registry; infra/images/build.sh).
# Cached: the base and the Python environment are rebuilt only when their inputs change.
.PHONY: images
images: setup
	bash infra/images/build.sh

# The team stack on a real Docker engine (tests/stack): images, `docker compose up`, a training run through
# the compose worker, serve, `down -v`. Not in `make test`: a cold image build alone outruns CI's budget
# (docs/DECISIONS.md 72). Needs a running engine and compose v2 (docs/tutorials/more-machines.md, "The team stack").
.PHONY: test-stack
test-stack: setup
	.venv/bin/python -m pytest tests/stack -v -s
