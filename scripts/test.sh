#!/usr/bin/env bash
# Set up (once) and run the whole test suite, with the real Kafka and Redis started for it.
# Stops at the first failing step with one line naming it; nothing starts after a failure.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source scripts/step.sh
source scripts/env.sh || exit 1
step services "Kafka or Redis did not start (see the lines above; 'bash deploy/local/services.sh status')" \
    bash deploy/local/services.sh start --secure
trap 'bash deploy/local/services.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(bash deploy/local/services.sh env)"
python -m pytest "$@"
