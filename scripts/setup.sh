#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it: torch's CPU wheel first, then
# everything else from pyproject.toml. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0   # CPU wheel; a bare `torch` pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q -e '.[dev,test]'

# The browser test (bm_assets_tests/test_browser.py) drives Debian's Chromium with Playwright. Install it
# where we can (root with apt-get); elsewhere the test is skipped with a message (and fails under CI=true).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
        echo "setup: no chromium here and no root to install it (apt-get install chromium): the browser test will be skipped"
    fi
fi
