#!/usr/bin/env bash
# Set everything up (idempotent), then run the main job: compress the bundled SmolLM2-135M by 20 %
# with rankwise's defaults, calibrated on wiki, and print the before/after table.
# A second run reads the dense and compressed perplexities from the cache (same weights, same windows).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/rankwise compress smollm2-135m --ratio 0.2 --calib wiki --out out/smol-20 --overwrite "$@"
