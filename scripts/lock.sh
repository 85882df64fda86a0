#!/usr/bin/env bash
# `make lock`: resolve setup.cfg into the lock files, with exact versions and hashes (decision 0080).
#
#   requirements/dev.lock      runtime + the dev extra (tests, lint) + build tools: what .venv holds
#   requirements/runtime.lock  runtime + build tools, the same versions: what a deploy installs
#
# The resolver (uv, itself pinned by requirements/tools.lock) runs from its own venv under .var/.
# Pass --upgrade to move every package to its newest release inside setup.cfg's ranges; without
# it, versions already in the lock are kept where they still fit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
TOOLS="$ROOT/.var/lock-tools"
UPGRADE=()
[[ ${1:-} == --upgrade ]] && UPGRADE=(--upgrade)

if [[ ! -x $TOOLS/bin/uv || requirements/tools.lock -nt $TOOLS/bin/uv ]]; then
    rm -rf "$TOOLS"
    python3 -m venv "$TOOLS"
    PIP_CONSTRAINT="" "$TOOLS/bin/python" -m pip --isolated install -q --disable-pip-version-check --require-hashes \
        -r requirements/tools.lock
fi

compile() {  # compile OUTPUT ARGS...
    local out=$1
    shift
    "$TOOLS/bin/uv" pip compile --quiet --generate-hashes --python-version 3.11 \
        --python-platform linux --custom-compile-command "make lock" "${UPGRADE[@]}" \
        -o "$out" "$@"
}
compile requirements/tools.lock requirements/tools.in
compile requirements/dev.lock setup.cfg requirements/build.in --extra dev
# The runtime lock takes its versions from the dev lock, so a deploy runs what the tests ran.
compile requirements/runtime.lock setup.cfg requirements/build.in -c requirements/dev.lock
"$TOOLS/bin/python" scripts/check_lock.py
echo "lock: requirements/dev.lock and requirements/runtime.lock written" >&2
