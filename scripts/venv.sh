#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the project (with the dev extra) into it.
# Reinstalls only when setup.cfg or pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"

find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    PYTHON=$(find_python) || {
        echo "venv: Python 3.11 is required (install the Debian package python3.11)" >&2
        exit 1
    }
    # Debian's python3 needs python3-venv for ensurepip.
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11-venv >/dev/null
        fi
        "$PYTHON" -m venv "$VENV"
    fi
fi

if [[ ! -f "$STAMP" || "$ROOT/setup.cfg" -nt "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
    echo "venv: installing the project into .venv" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev]" >&2
    touch "$STAMP"
fi
