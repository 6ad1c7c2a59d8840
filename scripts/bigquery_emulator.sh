#!/usr/bin/env bash
# A local BigQuery for tests and development: bqemulator 1.4.0 in its own venv (its pins
# conflict with the project's; DuckDB extensions come from PyPI wheels, nothing is downloaded
# at run time).
#   scripts/bigquery_emulator.sh install   create .bqemu-venv and import the DuckDB extensions
#   scripts/bigquery_emulator.sh start     install if needed, start on 127.0.0.1, wait for /healthz
#   scripts/bigquery_emulator.sh stop      stop the emulator started by `start` (by its PID)
# Environment: BQEMU_PORT (REST, default 9050), BQEMU_GRPC_PORT (9060), BQEMU_PROJECT (test-proj),
# BQEMU_DIR (state: PID file, log, HOME for the extensions; default .bqemu in the repo).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.bqemu-venv"
PORT="${BQEMU_PORT:-9050}"
GRPC_PORT="${BQEMU_GRPC_PORT:-9060}"
PROJECT="${BQEMU_PROJECT:-test-proj}"
STATE="${BQEMU_DIR:-$ROOT/.bqemu}"
PIDFILE="$STATE/emulator.pid"
# The extensions are imported into, and loaded from, ~/.duckdb of this HOME.
export HOME="$STATE/home"

install() {
    mkdir -p "$HOME"
    if [ ! -x "$VENV/bin/bqemulator" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 \
            duckdb-extension-avro==1.5.5 duckdb-extensions==1.5.5 numpy
    fi
    if [ ! -f "$STATE/extensions.ok" ]; then
        "$VENV/bin/python" -c "import duckdb_extensions as d; d.import_extension('spatial'); d.import_extension('avro')"
        touch "$STATE/extensions.ok"
    fi
}

start() {
    install
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "bqemulator already running (pid $(cat "$PIDFILE"))"
        return 0
    fi
    "$VENV/bin/bqemulator" start --rest-host 127.0.0.1 --rest-port "$PORT" --grpc-port "$GRPC_PORT" \
        --project "$PROJECT" >"$STATE/emulator.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
        if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" \
            2>/dev/null; then
            echo "bqemulator up on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            echo "bqemulator exited; log:" >&2
            cat "$STATE/emulator.log" >&2
            rm -f "$PIDFILE"
            return 1
        fi
        sleep 0.5
    done
    echo "bqemulator did not answer /healthz within 60 s; log:" >&2
    cat "$STATE/emulator.log" >&2
    stop
    return 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
