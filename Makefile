# Thin wrappers over scripts/: each target works on a fresh machine.
.PHONY: run test lint services-up services-down

run:
	scripts/run.sh

test:
	scripts/test.sh

lint:
	scripts/venv.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down
