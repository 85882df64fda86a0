#!/usr/bin/env bash
# Wait until an HTTP URL answers 200.
#
#   scripts/wait-for.sh URL [SECONDS]     (default timeout: 90 s)
#
# Exits 0 as soon as URL returns HTTP 200; exits 1 with one line on stderr on timeout.
set -euo pipefail

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: scripts/wait-for.sh URL [SECONDS]" >&2; exit 2; }
url=$1
timeout_s=${2:-90}
[[ $timeout_s =~ ^[0-9]+$ ]] || { echo "wait-for: SECONDS must be a whole number, got '$timeout_s'" >&2; exit 2; }

# One probe: print the HTTP status (000 when nothing answered). Each probe is capped at 5 s so
# a hanging server cannot stretch the overall timeout much.
probe() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" 2>/dev/null || true
    else
        python3 - "$url" 2>/dev/null <<'PY' || echo 000
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:  # non-2xx still means "something answered"
    print(e.code)
PY
    fi
}

deadline=$((SECONDS + timeout_s))
status=000
while :; do
    status=$(probe)
    [[ $status == 200 ]] && exit 0
    (( SECONDS < deadline )) || break
    sleep 0.5
done
echo "wait-for: $url did not answer 200 within ${timeout_s}s (last status: ${status:-000})" >&2
exit 1
