# Thin wrappers over scripts/: each target works on a fresh machine.
.PHONY: run test lint services-up services-down bench

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

bench:
	scripts/venv.sh && scripts/services.sh up && . .var/services.env && .venv/bin/python -m bench.trade
