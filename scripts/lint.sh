#!/usr/bin/env bash
# `make lint`, and the lint step of scripts/test.sh: style, types, import contracts, dead code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
echo "lint: ruff" >&2
ruff check .
ruff format --check . >/dev/null || { ruff format --check .; exit 1; }
echo "lint: mypy" >&2
mypy
# The import contracts (setup.cfg [importlinter], docs/decisions/0130): rooms in layers, no cycles.
echo "lint: import-linter" >&2
lint-imports --no-cache >/dev/null || lint-imports --no-cache
# Dead code; what only frameworks call by name is listed, with the reason, in the whitelist.
echo "lint: vulture" >&2
vulture ftl web workers tests bench alembic scripts
