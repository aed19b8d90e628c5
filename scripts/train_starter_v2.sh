#!/usr/bin/env bash
# Train the starter-v2 ensemble (examples/train/starter-v2.yaml) on this machine, bundle it and
# evaluate it.
#   bash scripts/train_starter_v2.sh [--smoke] [OUT]      (default OUT: /tmp/fd-starter-v2)
#
# Data, whatever of it exists here (the script prints what it uses):
#   the dev set ../shared/data/aigi/manifest.csv                                  (required)
#   the git-repository sources: $FEATDISTILL_GIT_SOURCES/train.csv, default
#     ${FEATDISTILL_CACHE:-~/.cache/featdistill}/sources/train.csv          (required; import them
#     with scripts/fetch_modern_sources.sh); FEATDISTILL_GIT_TRAIN names another index, e.g. one
#     without the opt-in sources (the shipped starter-v2 uses the default, licensed sources only)
#   the package-registry sources: ${FEATDISTILL_CACHE:-~/.cache/featdistill}/sources/train.csv
#     (scripts/fetch_training_sources.sh), a hash-chosen 1,200 of them, if present and not the
#     same file as the git index (one import root gathers both into one train.csv)
# Never heldout.csv or eval_only.csv: they are evaluated, and train.data.records refuses their rows.
#
# The four experts differ in data mixture and degradation policy (see the recipe's header):
#   a: bank paper, balanced;  b: bank paper, modern-heavy;  c: bank harsh, balanced;  d: bank
#   harsh, modern-heavy. Experts of one bank share its trunk pass (two bank builds in all).
#
# --smoke: the same pipeline on a few images (40 per source, ratio split, 2 views, 1 + 1 epochs,
# evaluation on 40 images), to check that everything runs; its numbers mean nothing. It prints
# the seconds each step took, from which scripts/README-style budgets are estimated.
set -euo pipefail
SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
source scripts/fetch_starter_backbone.sh
if [[ $SMOKE == 1 ]]; then OUT="${1:-/tmp/fd-starter-v2-smoke}"; else OUT="${1:-/tmp/fd-starter-v2}"; fi
REGISTRY="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources/train.csv"
GIT_ROOT="${FEATDISTILL_GIT_SOURCES:-${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources}"
GIT="${FEATDISTILL_GIT_TRAIN:-$GIT_ROOT/train.csv}"
AIGI="$(cd .. && pwd)/shared/data/aigi/manifest.csv"
[[ -f "$AIGI" ]] || { echo "no $AIGI: the dev set is needed" >&2; exit 1; }
[[ -f "$GIT" ]] || { echo "no $GIT: import the git sources (scripts/fetch_modern_sources.sh) or set FEATDISTILL_GIT_SOURCES" >&2; exit 1; }
use_registry=0
if [[ -f "$REGISTRY" && "$(realpath "$REGISTRY")" != "$(realpath "$GIT")" ]]; then use_registry=1; fi

limit_all=0
[[ $SMOKE == 1 ]] && limit_all=40
# sources for one mixture: aigi, git[, registry] with the given weights
sources() {  # w_aigi w_git w_registry
  local s="{path: $AIGI, weight: $1, limit: $limit_all}, {path: $GIT, weight: $2, limit: $limit_all}"
  if [[ $use_registry == 1 ]]; then
    local lim=1200; [[ $SMOKE == 1 ]] && lim=$limit_all
    s="$s, {path: $REGISTRY, weight: $3, limit: $lim}"
  fi
  echo "[$s]"
}
BALANCED="$(sources 1.0 1.0 1.0)"
MODERN="$(sources 0.5 3.0 0.5)"

holdout="disco-diffusion, majesty-diffusion, gpt-image/gpt-image-1"
if [[ $use_registry == 1 ]] && grep -q ',omniart-eye-cdcgan,' "$REGISTRY"; then
  holdout="$holdout, omniart-eye-cdcgan"
fi
SPLIT=(--set "data.split={kind: leave_out, holdout: [$holdout], seed: 0}")
HARSH=(--set "data.degrade={p_degrade: 1.0, p_extended: 0.8, min_ops: 2, max_ops: 3}"
       --set "data.prep.jpeg_quality=[35, 100]")
COMMON=(--set "expert.pretrained=$FEATDISTILL_STARTER_CLIP"
        --set "data.view_bank.dir=$OUT/view-bank")
EVAL=(--dtype fast --num-workers 1)
if [[ $SMOKE == 1 ]]; then
  SPLIT=(--set "data.split={kind: ratio, val_fraction: 0.25, seed: 0}")
  COMMON+=(--set "data.view_bank.views=2" --set "stage1.epochs=1" --set "stage2.epochs=1"
           --set "stage1.warmup_steps=1" --set "stage2.warmup_steps=1" --set "log_every=1"
           --set "batch_size=16")
  EVAL+=(--limit 40)
fi
echo "train_starter_v2: aigi=$AIGI git=$GIT registry=$([[ $use_registry == 1 ]] && echo "$REGISTRY" || echo none)" \
     "smoke=$SMOKE out=$OUT holdout=[$holdout]" >&2

seconds() { local t0=$SECONDS; "$@"; echo "train_starter_v2: $(( SECONDS - t0 )) s: ${*:1:4}" >&2; }
train_one() {  # tag seed mixture [extra --set ...]
  local tag=$1 seed=$2 mix=$3; shift 3
  [[ -f "$OUT/starter-$tag/adapter.safetensors" ]] && return 0
  # --resume: a run (and its view bank) interrupted by a kill or a machine stop goes on from its
  # last checkpoint (bank: its last progress record) instead of starting over.
  seconds featdistill train examples/train/starter-v2.yaml --out "$OUT/starter-$tag" --resume \
    "${COMMON[@]}" "${SPLIT[@]}" --set "expert.preset=starter:starter-$tag" --set "seed=$seed" \
    --set "data.sources=$mix" "$@"
}
train_one a 0 "$BALANCED"
train_one b 1 "$MODERN"
# One bank for all four (CPU budget): c and d differ from a and b by seed (their draws of views,
# batches and head init) and mixture only. The "harsh" bank (HARSH) doubles the trunk passes; on
# a GPU add it back to c and d: train_one c 2 "$BALANCED" "${HARSH[@]}".
train_one c 2 "$BALANCED"
train_one d 3 "$MODERN"

featdistill bundle combine-adapters "$OUT"/starter-{a,b,c,d}/adapter.safetensors \
  --out "$OUT/starter-v2-adapter.safetensors" --version starter-v2 --threshold 0.5
[[ -f "$OUT/starter-v2-bundle/manifest.json" ]] || seconds featdistill bundle from-adapter \
  "$OUT/starter-v2-adapter.safetensors" --backbone "$FEATDISTILL_STARTER_CLIP" --out "$OUT/starter-v2-bundle"

# Quality: the git sources' held-out set (unseen generators, COCO and phone photos) clean and
# re-encoded; what each expert's split held out of the dev set (--loo: disco/majesty-diffusion,
# gpt-image-1 and the same share of reals); the registry's reserved wallpapers when present.
B="$OUT/starter-v2-bundle"
[[ -f "$OUT/report-heldout/report.json" ]] || seconds featdistill eval --bundle "$B" \
  --data "$GIT_ROOT/heldout.csv" --out "$OUT/report-heldout" "${EVAL[@]}" --jpeg 50,30 \
  --degrade blur,noise,compression --levels medium
if [[ $SMOKE == 0 ]]; then
  [[ -f "$OUT/report-aigi/report.json" ]] || seconds featdistill eval --bundle "$B" --data "$AIGI" \
    --loo --out "$OUT/report-aigi" "${EVAL[@]}" --jpeg 30
  [[ -f "$OUT/report-git-loo/report.json" ]] || seconds featdistill eval --bundle "$B" --data "$GIT" \
    --loo --out "$OUT/report-git-loo" "${EVAL[@]}" --jpeg 30
  eval_only="$(dirname "$REGISTRY")/eval_only.csv"
  if [[ -f "$eval_only" ]] && [[ $(wc -l < "$eval_only") -gt 1 ]]; then
    [[ -f "$OUT/report-wallpapers/report.json" ]] || featdistill eval --bundle "$B" \
      --data "$eval_only" --out "$OUT/report-wallpapers" "${EVAL[@]}"
  fi
fi
echo "done: $OUT"
