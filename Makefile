# Thin wrappers over scripts/: each target works on a fresh machine.
.PHONY: run test lint lock services-up services-down bench

run:
	scripts/run.sh

test:
	scripts/test.sh

# Versions change only here: resolve setup.cfg into requirements/*.lock (UPGRADE=1: newest releases).
lock:
	scripts/lock.sh $(if $(UPGRADE),--upgrade)

lint:
	scripts/venv.sh && scripts/lint.sh

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

bench:
	scripts/venv.sh && scripts/services.sh up && . .var/services.env && .venv/bin/python -m bench.trade
