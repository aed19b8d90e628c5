#!/usr/bin/env bash
# Set up everything on a fresh machine, start Kafka and Redis, run the streaming demo, stop them.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source scripts/env.sh
bash deploy/local/services.sh start
trap 'bash deploy/local/services.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(bash deploy/local/services.sh env)"
featdistill demo "$@"
