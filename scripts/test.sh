#!/usr/bin/env bash
# Installs the project into .venv (if needed) and runs the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collects no test, so an empty run cannot pass.
.venv/bin/pytest "$@"
