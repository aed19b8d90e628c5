#!/usr/bin/env bash
# Set up (once) and run the whole test suite, with the real Kafka and Redis started for it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source scripts/env.sh
if [ -f deploy/local/services.sh ]; then
    bash deploy/local/services.sh start
    eval "$(bash deploy/local/services.sh env)"
    trap 'bash deploy/local/services.sh stop >/dev/null 2>&1 || true' EXIT
fi
python -m pytest "$@"
