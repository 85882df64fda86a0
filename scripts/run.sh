#!/usr/bin/env bash
# `make run`: install, bring up Redis and PostgreSQL, migrate, seed, then every process of the
# Procfile under honcho. Ctrl-C stops the processes and the private services this run started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/venv.sh
scripts/services.sh up
# shellcheck source=/dev/null
. .var/services.env
if [[ ${FTL_STARTED_REDIS:-0} == 1 || ${FTL_STARTED_PG:-0} == 1 ]]; then
    trap 'scripts/services.sh down' EXIT
fi

export PATH="$ROOT/.venv/bin:$PATH"
export ENV="${ENV:-development}"
WEB_PORT="${WEB_PORT:-8080}"
export WEB_PORT

# A development signing key, made once and kept under .var/ (production passes its own).
if [[ -z ${JWT_PRIVATE_KEY_B64:-} ]]; then
    [[ -s .var/jwt.env ]] || ftl keys > .var/jwt.env
    JWT_PRIVATE_KEY_B64=$(cut -d= -f2- .var/jwt.env)
    export JWT_PRIVATE_KEY_B64
fi

ftl migrate
ftl seed

# The release step already ran above; every other Procfile entry is a long-running process.
mapfile -t PROCESSES < <(grep -E '^[a-z]+:' Procfile | cut -d: -f1 | grep -v '^release$')
cat <<MSG

FTL is starting: ${PROCESSES[*]}
  API        http://127.0.0.1:${WEB_PORT}/api
  health     http://127.0.0.1:${WEB_PORT}/health
  readiness  http://127.0.0.1:${WEB_PORT}/ready
Stop with Ctrl-C.

MSG
honcho start -f Procfile "${PROCESSES[@]}"
