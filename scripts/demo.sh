#!/usr/bin/env bash
# Set everything up (idempotent), then run the main job on the bundled SmolLM2-135M and wiki data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/rankwise eval smollm2-135m --data wiki --split eval --tokens 16384 --seq-len 256 "$@"
