#!/usr/bin/env bash
# Set up, lint, and run the whole test suite. Starts the local BigQuery emulator for the tests
# marked `bigquery` (its own venv, stopped by PID on exit), so they run here as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check bm_assets bm_assets_tests benchmarks

export BQEMU_PORT="${BQEMU_PORT:-9050}"
trap 'scripts/bigquery_emulator.sh stop' EXIT
scripts/bigquery_emulator.sh start
export BIGQUERY_EMULATOR_HOST="http://127.0.0.1:${BQEMU_PORT}"

.venv/bin/python -m pytest -q "$@"
