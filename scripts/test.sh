#!/usr/bin/env bash
# Set everything up (idempotent), then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench
mypy
pytest "$@"
