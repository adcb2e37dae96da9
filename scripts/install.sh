#!/usr/bin/env bash
# Creates .venv and installs the project, unless already done for this exact pyproject.toml.
#
#   bash scripts/install.sh             # the dev extra: the test tools and the local AWS and
#                                       # PostgreSQL (the local extra); what start.sh and
#                                       # test.sh install
#   bash scripts/install.sh --runtime   # only what runs in production: the code location's
#                                       # image (deploy/Dockerfile)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") extras=dev ;;
  --runtime) extras=slack ;;
  *) echo "install.sh: unknown option '$1' (expected --runtime or nothing)" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
stamp=.venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
echo "Installing metrics_pipeline and its dependencies into .venv (first run only)..."
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[$extras]"
rm -f .venv/.installed-*
touch "$stamp"
