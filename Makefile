# The README's quickstart: `make run` (whole pipeline, services included) and `make test`.
.PHONY: setup run test services-up services-down lint

setup:
	@bash infra/local/bootstrap.sh

run: setup
	.venv/bin/flowtune services up
	.venv/bin/flowtune run

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports

services-up: setup
	.venv/bin/flowtune services up

services-down: setup
	.venv/bin/flowtune services down
