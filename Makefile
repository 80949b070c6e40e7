# The README's quickstart: `make run` (whole pipeline, services included) and `make test`.
.PHONY: setup run test test-fast services-up services-down lint gpu-bundle

setup:
	@bash infra/local/bootstrap.sh

run: setup
	.venv/bin/flowtune services up
	.venv/bin/flowtune run

# Two workers; whole files per worker, in collection order, so that the two long e2e runs (tests/lanes.py)
# start first, one per worker, while the rest of the suite follows (docs/DECISIONS.md 37).
TEST_WORKERS ?= 2
test: setup
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Every test not marked `slow` (those train real models, clone the repo or start services of their own).
test-fast: setup
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports

services-up: setup
	.venv/bin/flowtune services up

services-down: setup
	.venv/bin/flowtune services down

# What benchmarks/gpu_suite.sh carries to a lent GPU machine (wheels its image lacks, the encoder in fp16).
gpu-bundle: setup
	PY=.venv/bin/python bash benchmarks/gpu/bundle.sh
