#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite with coverage; ruff first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import torchrec, trainer' 2>/dev/null; then
  bash scripts/setup.sh
fi
.venv/bin/ruff check .
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest --cov --cov-report=term "$@"
