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
# The experts differ in data mixture and seed (see the recipe's header), all on one view bank:
#   a: balanced, seed 0;  b: modern-heavy, seed 1;  c: balanced, seed 2;  d: modern-heavy, seed 3
#   (default "a c", as shipped; FEATDISTILL_V2_EXPERTS="a b c d" on a GPU, with c and d on the
#   harsh bank). Then the UnivFD probe on the same bank, the threshold at a 3 % false-positive
#   rate on held-out real photos (FEATDISTILL_V2_FPR, FEATDISTILL_V2_CALIBRATION), the bundles
#   and their reports under OUT/report-*-{starter-v2,univfd}.
# The shipped adapter (v2's third training, 2026-12-02; detector/starter/README.md) is this
# script on a 2-core CPU in about 2 h: the defaults (cap 500, experts a and c) plus the
# CPU-budget knobs below:
#   FEATDISTILL_V2_AIGI_LIMIT=600 FEATDISTILL_V2_VIEWS=2 FEATDISTILL_V2_PROBE=0 \
#   FEATDISTILL_V2_QUALITY=0 bash scripts/train_starter_v2.sh OUT   # -> OUT/starter-v2-adapter.safetensors
#
# On a GPU node that lacks the sources (how v2's second training ran: an H200 reached through
# a thin link), pack the pool here and train there on the pack:
#   bash scripts/train_starter_v2.sh --pack DIR            # here: 8,547 images -> 145 MB, 3 min
#   FEATDISTILL_PREPARED=DIR FEATDISTILL_V2_EXPERTS="a b c d" FEATDISTILL_V2_HARSH=1 \
#   FEATDISTILL_V2_WORKERS=14 FEATDISTILL_V2_TRAIN_ONLY=1 bash scripts/train_starter_v2.sh OUT
#                                                          # there, with the same manifests
# then bring OUT/starter-*/ and OUT/univfd/ back and run the script here (it skips what exists).
#
# --smoke: the same pipeline on a few images (40 per source, ratio split, 2 views, 1 + 1 epochs,
# evaluation on 40 images), to check that everything runs; its numbers mean nothing. It prints
# the seconds each step took, from which scripts/README-style budgets are estimated.
set -euo pipefail
SMOKE=0 PACK=""
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
if [[ "${1:-}" == "--pack" ]]; then PACK="$2"; shift 2; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# FEATDISTILL_NO_VENV=1: use the python and featdistill already on PATH (a GPU image's own torch)
[[ -n "${FEATDISTILL_NO_VENV:-}" ]] || source scripts/env.sh
source scripts/fetch_starter_backbone.sh
if [[ $SMOKE == 1 ]]; then OUT="${1:-/tmp/fd-starter-v2-smoke}"; else OUT="${1:-/tmp/fd-starter-v2}"; fi
REGISTRY="${FEATDISTILL_REGISTRY_TRAIN:-${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources/train.csv}"
GIT_ROOT="${FEATDISTILL_GIT_SOURCES:-${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources}"
GIT="${FEATDISTILL_GIT_TRAIN:-$GIT_ROOT/train.csv}"
AIGI="${FEATDISTILL_AIGI:-$(cd .. && pwd)/shared/data/aigi/manifest.csv}"
[[ -f "$AIGI" ]] || { echo "no $AIGI: the dev set is needed" >&2; exit 1; }
[[ -f "$GIT" ]] || { echo "no $GIT: import the git sources (scripts/fetch_modern_sources.sh) or set FEATDISTILL_GIT_SOURCES" >&2; exit 1; }
use_registry=0
if [[ -f "$REGISTRY" && "$(realpath "$REGISTRY")" != "$(realpath "$GIT")" ]]; then use_registry=1; fi

limit_all=0
[[ $SMOKE == 1 ]] && limit_all=40
# FEATDISTILL_V2_PER_SOURCE=N: at most N images of each repository in the git index (hash-chosen,
# data.sources[].limit_per_source), so that no single gallery becomes most of a class: since the
# sixth import the default index holds 2,297 Krea 2 portraits of one composition (45 % of its AI
# images) and 3,781 clothes photos. 500 (the default) as the shipped adapter was trained; 0: all
# (v2's second training, on the index before the sixth import).
PER_SOURCE="${FEATDISTILL_V2_PER_SOURCE:-500}"
# FEATDISTILL_V2_AIGI_LIMIT=N: a hash-chosen N of the dev set (default all), for a CPU budget
AIGI_LIMIT="${FEATDISTILL_V2_AIGI_LIMIT:-$limit_all}"
# sources for one mixture: aigi, git[, registry] with the given weights
sources() {  # w_aigi w_git w_registry
  local s="{path: $AIGI, weight: $1, limit: $AIGI_LIMIT}, {path: $GIT, weight: $2, limit: $limit_all, limit_per_source: $PER_SOURCE}"
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
# Since the sixth import the index holds SD 3.5 Large (276 images): keep it unseen, a modern
# generator for --loo to score (FLUX.1 dev, Krea 2 and the rest are trained on).
if grep -q ',sd3/sd3.5-large,' "$GIT"; then holdout="$holdout, sd3/sd3.5-large"; fi
SPLIT=(--set "data.split={kind: leave_out, holdout: [$holdout], seed: 0}")
# The harsh policy (c and d with FEATDISTILL_V2_HARSH=1: a second bank, cheap on a GPU). It
# changes the degradations only, not the prep, so one pack of prepared views serves both banks.
HARSH=(--set "data.degrade={p_degrade: 1.0, p_extended: 0.8, min_ops: 2, max_ops: 3}")
[[ -n "${FEATDISTILL_V2_HARSH:-}" ]] || HARSH=()
COMMON=(--set "expert.pretrained=$FEATDISTILL_STARTER_CLIP"
        --set "data.view_bank.dir=$OUT/view-bank")
# FEATDISTILL_V2_TEXT=P: draw words on P of the crops, both classes (data.prep.text_overlay,
# train.data.text_overlay): the shipped adapter reads text as a sign of AI. Off by default, as the
# shipped adapter was trained, and a small A/B here did not show it helping photographed text
# (recipe header); it changes every view, so the pack and the banks are new ones.
[[ -z "${FEATDISTILL_V2_TEXT:-}" ]] || COMMON+=(--set "data.prep.text_overlay=$FEATDISTILL_V2_TEXT")
# FEATDISTILL_V2_VIEWS=N: views per image in the bank (the recipe's 3 by default); 2 cuts a CPU
# bank by a third
[[ -z "${FEATDISTILL_V2_VIEWS:-}" ]] || COMMON+=(--set "data.view_bank.views=$FEATDISTILL_V2_VIEWS")
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

# --pack DIR: write the pool's prepared reference views (train.data.prepared) and stop; a node
# without the sources (a GPU) then trains with FEATDISTILL_PREPARED=DIR and the same manifests.
if [[ -n "$PACK" ]]; then
  exec featdistill train examples/train/starter-v2.yaml --pack-views "$PACK" "${COMMON[@]}" \
    "${SPLIT[@]}" --set "data.sources=$BALANCED"
fi
[[ -z "${FEATDISTILL_PREPARED:-}" ]] || COMMON+=(--set "data.view_bank.prepared=$FEATDISTILL_PREPARED")
# FEATDISTILL_V2_WORKERS=N: decoding and degradation processes (a GPU node's cores feed its trunk)
[[ -z "${FEATDISTILL_V2_WORKERS:-}" ]] || COMMON+=(--set "data.num_workers=$FEATDISTILL_V2_WORKERS")

# FEATDISTILL_V2_TAIL=N: the experts tune their last N of CLIP's 12 blocks instead of 2, on a
# trunk shared up to block 12 - N (a bank of its own), at 2.3 times the cost of a training step
# with N=4. A one-expert CPU A/B did not settle whether it helps (one seed +0.03 AUC, another
# -0.016; detector/starter/EXPERIMENTS.md). The probe keeps its frozen tower, same bank.
TRUNK=() TAIL=()
if [[ -n "${FEATDISTILL_V2_TAIL:-}" ]]; then
  TRUNK=(--set "expert.shared_blocks=$(( 12 - FEATDISTILL_V2_TAIL ))")
  TAIL=(--set "stage1.trainable_blocks=$FEATDISTILL_V2_TAIL"
        --set "stage2.trainable_blocks=$FEATDISTILL_V2_TAIL")
fi
seconds() { local t0=$SECONDS; "$@"; echo "train_starter_v2: $(( SECONDS - t0 )) s: ${*:1:4}" >&2; }
train_one() {  # tag seed mixture [extra --set ...]
  local tag=$1 seed=$2 mix=$3; shift 3
  [[ -f "$OUT/starter-$tag/adapter.safetensors" ]] && return 0
  # --resume: a run (and its view bank) interrupted by a kill or a machine stop goes on from its
  # last checkpoint (bank: its last progress record) instead of starting over.
  seconds featdistill train examples/train/starter-v2.yaml --out "$OUT/starter-$tag" --resume \
    "${COMMON[@]}" "${SPLIT[@]}" --set "expert.preset=starter:starter-$tag" --set "seed=$seed" \
    --set "data.sources=$mix" ${TRUNK[@]+"${TRUNK[@]}"} ${TAIL[@]+"${TAIL[@]}"} "$@"
}
# Experts b and d (the modern-heavy mixture) are left out by default: on the capped pool b added
# nothing to a (detector/starter/EXPERIMENTS.md), and each costs about 35 min on this CPU.
# FEATDISTILL_V2_EXPERTS="a b c d" trains and bundles all four (on a GPU give c and d the "harsh"
# bank: FEATDISTILL_V2_HARSH=1).
# (FEATDISTILL_V2_EXPERTS="" trains none of them: a node that adds only the DINOv2 ones below)
EXPERTS=(${FEATDISTILL_V2_EXPERTS-a c})
for tag in ${EXPERTS[@]+"${EXPERTS[@]}"}; do
  case $tag in
    a) train_one a 0 "$BALANCED" ;;
    b) train_one b 1 "$MODERN" ;;
    c) train_one c 2 "$BALANCED" ${HARSH[@]+"${HARSH[@]}"} ;;
    d) train_one d 3 "$MODERN" ${HARSH[@]+"${HARSH[@]}"} ;;
    *) echo "unknown expert $tag" >&2; exit 1 ;;
  esac
done
# The baseline: a UnivFD linear probe on the frozen CLIP embedding, same bank, same split
# (FEATDISTILL_V2_PROBE=0: not trained, for a CPU budget; then only starter-v2 is bundled).
PROBE="${FEATDISTILL_V2_PROBE:-1}"
[[ -f "$OUT/univfd/adapter.safetensors" || ${#EXPERTS[@]} == 0 || $PROBE == 0 ]] || seconds featdistill train examples/train/starter-v2.yaml \
  --out "$OUT/univfd" --resume "${COMMON[@]}" "${SPLIT[@]}" --set "data.sources=$BALANCED" \
  --set "version=univfd-v2" --set "expert.preset=univfd:univfd-probe" --set "low_rank={rank: 0}" \
  ${TRUNK[@]+"${TRUNK[@]}"} \
  --set "stage1={epochs: 3, lr: 1.0e-3, warmup_steps: 10, min_lr_ratio: 0.05, trainable_blocks: none, weight_decay: 0.0}" \
  --set "stage2={epochs: 0}"
# Another backbone (issue 11, item 4): with FEATDISTILL_DINOV2=<converted folder>
# (scripts/fetch_dinov2_backbone.sh), one expert of the starter's layout on DINOv2 ViT-S/14 and
# its linear probe, same pool, split, prep (and pack) and recipe; their own view bank. Bundles
# only (adapters apply to open_clip files); `featdistill bundle compose` mixes them with CLIP.
if [[ -n "${FEATDISTILL_DINOV2:-}" ]]; then
  dino_one() {  # name seed mixture [extra --set ...]
    local name=$1 seed=$2 mix=$3; shift 3
    [[ -f "$OUT/$name/bundle/manifest.json" ]] && return 0
    seconds featdistill train examples/train/starter-v2.yaml --out "$OUT/$name" --resume \
      "${COMMON[@]}" "${SPLIT[@]}" --set "expert.pretrained=$FEATDISTILL_DINOV2" \
      --set "expert.preset=dinov2:$name" --set "seed=$seed" --set "data.sources=$mix" "$@"
  }
  dino_one dinov2-s14-a 4 "$BALANCED"
  dino_one dinov2-probe 0 "$BALANCED" --set "low_rank={rank: 0}" --set "stage2={epochs: 0}" \
    --set "stage1={epochs: 3, lr: 1.0e-3, warmup_steps: 10, min_lr_ratio: 0.05, trainable_blocks: none, weight_decay: 0.0}"
fi
# FEATDISTILL_V2_TRAIN_ONLY=1: stop here (a GPU node without the evaluation images; the adapters
# under OUT/starter-*/ and OUT/univfd/ come back, and the rest runs where the images are).
[[ -z "${FEATDISTILL_V2_TRAIN_ONLY:-}" ]] || exit 0

# Threshold: the score at which FPR (3 %) of held-out real photos are flagged, stored in the
# bundle and then in the adapter, so the demo's bundle, rebuilt from the adapter, carries it too.
# Which photos: by default (FEATDISTILL_V2_CALIBRATION=coco-half) a hash-chosen half of the COCO
# photos of the git sources' heldout.csv, everyday photos never trained on (the other half and
# the rest of that set stay for evaluation); "split": the split's own held-out reals (mostly
# phone photos of clothes: they set 0.012, which flagged 55 % of COCO and phone photos); or a
# manifest of your own real photos.
FPR="${FEATDISTILL_V2_FPR:-0.03}"
CALIBRATION="${FEATDISTILL_V2_CALIBRATION:-coco-half}"
if [[ $CALIBRATION == coco-half ]]; then
  CALIBRATION="$OUT/coco-calibration.csv"
  python - "$GIT_ROOT/heldout.csv" "$CALIBRATION" <<'PY'
import csv, sys
from pathlib import Path
from train.data.records import hash_unit
held, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with open(held, newline="") as f:
    reader = csv.DictReader(f)
    rows = [dict(r, path=str(held.parent / r["path"])) for r in reader
            if r["source"].startswith("lightly-ai/coco128_yolo") and r["label"] == "real"
            and hash_unit(r["path"], 0) < 0.5]
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=reader.fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
print(f"train_starter_v2: threshold set on {len(rows)} COCO photos ({out})", file=sys.stderr)
PY
fi
if [[ $CALIBRATION == split ]]; then CAL=(--data "$GIT" --loo); else CAL=(--data "$CALIBRATION"); fi
adapters=()
for tag in "${EXPERTS[@]}"; do adapters+=("$OUT/starter-$tag/adapter.safetensors"); done
threshold_of() { python -c 'import json,sys; print(json.load(open(sys.argv[1]))["threshold"])' "$1/manifest.json"; }
BUNDLES=(starter-v2 univfd)
[[ $PROBE == 0 ]] && BUNDLES=(starter-v2)
for name in "${BUNDLES[@]}"; do
  B="$OUT/$name-bundle"
  [[ -f "$B/manifest.json" ]] && continue
  if [[ $name == univfd ]]; then src="$OUT/univfd/adapter.safetensors"; else
    featdistill bundle combine-adapters "${adapters[@]}" --out "$OUT/starter-v2-adapter.safetensors" \
      --version starter-v2 --threshold 0.5
    src="$OUT/starter-v2-adapter.safetensors"
  fi
  seconds featdistill bundle from-adapter "$src" --backbone "$FEATDISTILL_STARTER_CLIP" --out "$B.partial"
  # The stored threshold is computed in fp32 whatever the CPU (the last --dtype wins): it sits
  # between the two highest of 59 COCO photos, and bf16 on an AVX512-BF16 CPU moved one of them
  # from 0.951 to 0.903, the threshold from 0.974 to 0.950 (a one-expert run of 2026-12-02).
  seconds featdistill eval --bundle "$B.partial" "${CAL[@]}" --set-threshold-fpr "$FPR" \
    --out "$OUT/report-threshold-$name" "${EVAL[@]}" --dtype float32
  if [[ $name == starter-v2 ]]; then
    featdistill bundle combine-adapters "${adapters[@]}" --out "$OUT/starter-v2-adapter.safetensors" \
      --version starter-v2 --threshold "$(threshold_of "$B.partial")"
  fi
  mv "$B.partial" "$B"
done

# FEATDISTILL_V2_QUALITY=0: stop here, the bundles built and thresholded (a CPU budget; evaluate
# them with `featdistill eval` on what matters most first).
[[ "${FEATDISTILL_V2_QUALITY:-1}" != 0 ]] || { echo "done (no quality evaluation): $OUT"; exit 0; }

# FEATDISTILL_ART_HELDOUT: human-made art kept out of training (whole packages), all "real". By
# default the held-out packages' rows (supertux, hedgewars) of the registry's heldout.csv, which
# also holds the git sources' held-out photos and AI images when both share a root.
ART="${FEATDISTILL_ART_HELDOUT:-}"
held="$(dirname "$REGISTRY")/heldout.csv"
if [[ -z "$ART" && -f "$held" ]] && [[ $(wc -l < "$held") -gt 1 ]]; then
  # the art rows to OUT/art-heldout.csv, the others (git photos and AI) to OUT/git-heldout.csv
  n_art=$(python - "$held" "$OUT/art-heldout.csv" "$OUT/git-heldout.csv" <<'PY'
import csv, sys
from pathlib import Path
from train.sources.package_sources import IMPORTERS
held, art, rest = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), Path(sys.argv[3])
names = {imp.name for imp in IMPORTERS if imp.held_out}
with open(held, newline="") as f:
    reader = csv.DictReader(f)
    rows = [(r["path"].split("/", 1)[0] in names, dict(r, path=str(held.parent / r["path"])))
            for r in reader]
art.parent.mkdir(parents=True, exist_ok=True)
for out, keep in ((art, True), (rest, False)):
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for is_art, r in rows if is_art == keep)
print(sum(is_art for is_art, _ in rows))
PY
  )
  [[ $n_art == 0 ]] || ART="$OUT/art-heldout.csv"
fi
# The git sources' held-out set, without the art when both importers share a root
HELDOUT="$GIT_ROOT/heldout.csv"
if [[ "$(realpath "$held" 2>/dev/null)" == "$(realpath "$HELDOUT" 2>/dev/null)" && -f "$OUT/git-heldout.csv" ]]; then
  HELDOUT="$OUT/git-heldout.csv"
fi
# Quality, both bundles: the git sources' held-out set (unseen generators, COCO and phone photos)
# clean, re-encoded and degraded; what the split held out of the dev set (--loo: disco/majesty-
# diffusion and the same share of reals). Never the Debian wallpapers: reserved for the
# independent evaluation of our bundles, no importer fetches them.
for name in "${BUNDLES[@]}"; do
  B="$OUT/$name-bundle"
  [[ -f "$OUT/report-heldout-$name/report.json" ]] || seconds featdistill eval --bundle "$B" \
    --data "$HELDOUT" --out "$OUT/report-heldout-$name" "${EVAL[@]}" --jpeg 50,30 \
    --degrade blur,noise,compression --levels medium
  [[ $SMOKE == 1 ]] && continue
  [[ -f "$OUT/report-git-loo-$name/report.json" ]] || seconds featdistill eval --bundle "$B" --data "$GIT" \
    --loo --out "$OUT/report-git-loo-$name" "${EVAL[@]}" --jpeg 30
  [[ -f "$OUT/report-aigi-$name/report.json" ]] || seconds featdistill eval --bundle "$B" --data "$AIGI" \
    --loo --out "$OUT/report-aigi-$name" "${EVAL[@]}" --jpeg 30
  # the held-out human-made art (FEATDISTILL_ART_HELDOUT, above)
  if [[ -n "$ART" ]]; then
    [[ -f "$OUT/report-art-$name/report.json" ]] || seconds featdistill eval --bundle "$B" \
      --data "$ART" --out "$OUT/report-art-$name" "${EVAL[@]}"
  fi
done
echo "done: $OUT"
