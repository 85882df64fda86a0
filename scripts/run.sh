#!/usr/bin/env bash
# `make run`: install, bring up Redis and PostgreSQL, migrate, seed, then every process of the
# Procfile under honcho (scripts/procs.py: a clean stop, decision 0062). Ctrl-C stops the
# processes and the private services this run started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/venv.sh
scripts/services.sh up
# shellcheck source=/dev/null
. .var/services.env
STOP_SERVICES=0
if [[ ${FTL_STARTED_REDIS:-0} == 1 || ${FTL_STARTED_PG:-0} == 1 ]]; then
    STOP_SERVICES=1
fi
SIM_PID=""
BOTS_PID=""
GOOGLE_PID=""
cleanup() {
    [[ -n $SIM_PID ]] && kill "$SIM_PID" 2>/dev/null || true
    [[ -n $GOOGLE_PID ]] && kill "$GOOGLE_PID" 2>/dev/null || true
    [[ -n $BOTS_PID ]] && kill "$BOTS_PID" 2>/dev/null || true
    [[ $STOP_SERVICES == 1 ]] && scripts/services.sh down || true
}
trap cleanup EXIT

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
# The private Redis keeps its state across restarts (saved on stop, scripts/services.sh); if the
# hot state is gone all the same (a killed Redis, another REDIS_URL), rebuild it from Postgres.
ftl recover --if-lost

# Development plays simulated matches: the poller reads the local Sportmonks simulator, and
# Google sign-in verifies tokens of the local issuer (`ftl dev google`), unless told otherwise.
SPORTMONKS_SIM_PORT="${SPORTMONKS_SIM_PORT:-8090}"
export SPORTMONKS_SIM_PORT
export SPORTMONKS_BASE_URL="${SPORTMONKS_BASE_URL:-http://127.0.0.1:${SPORTMONKS_SIM_PORT}/v3/football}"
# NOTE: --resume: a restarted `make run` picks the matches up by the clock (no replays).
ftl sim sportmonks --speed "${SIM_SPEED:-15}" --resume .var/sportmonks-sim.json &
SIM_PID=$!
if [[ -z ${GOOGLE_JWKS_URL:-} ]]; then
    GOOGLE_DEV_PORT="${GOOGLE_DEV_PORT:-8091}"
    export GOOGLE_DEV_PORT
    export GOOGLE_JWKS_URL="http://127.0.0.1:${GOOGLE_DEV_PORT}/certs"
    ftl dev google --port "$GOOGLE_DEV_PORT" &
    GOOGLE_PID=$!
fi
# Synthetic traders keep the demo market moving (BOTS=0 for none); they wait for the API. They
# connect from 127.0.0.2, so the per-IP rate limits count them apart from you on 127.0.0.1.
if [[ ${BOTS:-20} -gt 0 ]]; then
    ftl bots --count "${BOTS:-20}" --rate "${BOT_RATE:-1}" --url "http://127.0.0.1:${WEB_PORT}" \
        --source-address 127.0.0.2 &
    BOTS_PID=$!
fi

# The release step already ran above; every other Procfile entry is a long-running process.
mapfile -t PROCESSES < <(grep -E '^[a-z]+:' Procfile | cut -d: -f1 | grep -v '^release$')
cat <<MSG

FTL is starting: ${PROCESSES[*]}
  console    http://127.0.0.1:${WEB_PORT}/console  (open it, sign in, trade the live match)
  API        http://127.0.0.1:${WEB_PORT}/api
  health     http://127.0.0.1:${WEB_PORT}/health
  readiness  http://127.0.0.1:${WEB_PORT}/ready
  matches    http://127.0.0.1:${WEB_PORT}/api/matches
  simulator  ${SPORTMONKS_BASE_URL} (speed ${SIM_SPEED:-15}: match minutes per real minute)
  google     ${GOOGLE_JWKS_URL} (mint a sign-in token: ftl dev google --mint you@example.com)
  metrics    worker :9200, flusher :9300, poller :9400 (/metrics; copy N of a kind: + N - 1)
  bots       ${BOTS:-20} synthetic traders, about ${BOT_RATE:-1} trades a second (BOTS=0: none)
Try: curl -s -X POST -H 'Content-Type: application/json' -d '{"displayName":"Asha"}' \
       http://127.0.0.1:${WEB_PORT}/api/auth/dev
Stop with Ctrl-C.

MSG
python scripts/procs.py start -f Procfile "${PROCESSES[@]}"
