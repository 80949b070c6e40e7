# The README's quickstart: `make run` (whole pipeline, services included) and `make test`.
.PHONY: setup run test test-fast services-up services-down lint

setup:
	@bash infra/local/bootstrap.sh

run: setup
	.venv/bin/flowtune services up
	.venv/bin/flowtune run

# One process: the e2e run's training must not share the two cores with other tests (under
# pytest-xdist -n 2 it took 45 min instead of 17 and hit its timeout). `make test-fast` uses workers.
TEST_WORKERS ?= 2
test: setup
	.venv/bin/python -m pytest

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
