#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it: torch's CPU wheel first, then
# everything else from pyproject.toml. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0   # CPU wheel; a bare `torch` pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q -e '.[dev]'
