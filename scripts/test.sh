#!/usr/bin/env bash
# `make test`: install (Chromium for the browser test too), bring up Redis and PostgreSQL, lint,
# type-check, run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -k money).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/venv.sh
scripts/browser.sh
scripts/services.sh up
# shellcheck source=/dev/null
. .var/services.env
if [[ ${FTL_STARTED_REDIS:-0} == 1 || ${FTL_STARTED_PG:-0} == 1 ]]; then
    trap 'scripts/services.sh down >/dev/null' EXIT
fi

export PATH="$ROOT/.venv/bin:$PATH"
scripts/lint.sh
# pytest exits 5 when it ran no test; that is a failure here like any other non-zero exit.
pytest "$@"
