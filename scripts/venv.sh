#!/usr/bin/env bash
# Create .venv with Python 3.11 and install exactly requirements/dev.lock into it, hashes checked,
# then the project itself without dependencies (decision 0080). Stops with a clear message when
# setup.cfg and the lock disagree. Reinstalls only when the lock or the project's metadata changed.
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

"$VENV/bin/python" "$ROOT/scripts/check_lock.py"

# The stamp holds the checksum of what was installed from, so a changed lock or setup.cfg (even
# one older than the stamp, as a git checkout may leave it) reinstalls.
WANTED=$(cat "$ROOT/requirements/dev.lock" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [[ ! -f "$STAMP" || $(cat "$STAMP") != "$WANTED" ]]; then
    echo "venv: installing requirements/dev.lock into .venv" >&2
    # NOTE: --isolated and an empty PIP_CONSTRAINT keep a machine's own pip settings (extra
    # indexes, find-links, constraints) out of it: the lock alone says what is installed.
    PIP=("$VENV/bin/python" -m pip --isolated --disable-pip-version-check)
    # pip-sync semantics: anything installed that the lock does not name goes first.
    norm() { tr 'A-Z_.' 'a-z--'; }
    EXTRA=$(comm -23 \
        <("${PIP[@]}" freeze --all --exclude-editable | sed -nE 's/^([^=@ ]+).*/\1/p' | norm | sort -u) \
        <({ sed -nE 's/^([A-Za-z0-9][A-Za-z0-9._-]*)==.*/\1/p' "$ROOT/requirements/dev.lock"; echo pip; } \
            | norm | sort -u))
    if [[ -n $EXTRA ]]; then
        # shellcheck disable=SC2086
        "${PIP[@]}" uninstall -q -y $EXTRA >&2
    fi
    PIP_CONSTRAINT="" "${PIP[@]}" install -q --require-hashes --no-deps \
        -r "$ROOT/requirements/dev.lock" >&2
    "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
    "${PIP[@]}" check >&2
    echo "$WANTED" > "$STAMP"
fi
