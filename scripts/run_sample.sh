#!/usr/bin/env bash
# The main job, end to end, on the bundled sample: set up, then materialize every asset into
# the embedded DuckDB file under $BM_HOME (default ./bm_home).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bm-assets run "$@"
