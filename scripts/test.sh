#!/usr/bin/env bash
# Installs the project into .venv (if needed) and runs the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser test drives Debian's Chromium through its chromedriver; without either it is
# skipped, so install both where we can (CI runs as root).
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash scripts/install.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The type checker over the package and the benchmarks ([tool.mypy] in pyproject.toml).
.venv/bin/mypy
# The import contracts of [tool.importlinter] in pyproject.toml: no cycles, the boundaries.
.venv/bin/lint-imports --no-cache
# The definitions load as Dagster's own tooling loads them (any region will do for that).
METRICS_AWS_REGIONS=${METRICS_AWS_REGIONS:-us-east-1} VIRTUAL_ENV=$PWD/.venv .venv/bin/dg check defs
# pytest exits 5 when it collects no test, so an empty run cannot pass. Two workers (pytest-xdist),
# dealt the tests that start processes first, in turn (conftest.py), a module whose tests share
# one stack to one worker (xdist_group); `-n 0` runs them in one.
.venv/bin/pytest --numprocesses 2 --dist loadgroup "$@"
