#!/usr/bin/env bash
# Set up, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check bm_assets bm_assets_tests benchmarks
.venv/bin/python -m pytest -q "$@"
