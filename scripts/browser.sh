#!/usr/bin/env bash
# Chromium and its WebDriver from Debian, for the console's browser test (tests/e2e/). Installs
# only when /usr/bin/chromedriver is missing, so every later `make test` skips apt entirely.
set -euo pipefail

if [[ -x /usr/bin/chromedriver && -x /usr/bin/chromium ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: install Chromium and chromedriver (Debian: chromium chromium-driver)" >&2
    exit 1
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi
echo "browser: installing chromium and chromium-driver from Debian" >&2
"${SUDO[@]}" apt-get update -q >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
