# Sourced by train_starter.sh and loo_starter.sh (after they set OUT): the environment, the
# converted backbone, the starter's data and the settings every starter run shares.
#   COMMON  --set options of every run (backbone, data sources, the shared view bank under $OUT)
#   PROBE   --set options that turn examples/train/starter.yaml into the UnivFD linear probe
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
source scripts/fetch_starter_backbone.sh
SOURCES="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources"
AIGI="$(cd .. && pwd)/shared/data/aigi/manifest.csv"
[[ -f "$SOURCES/train.csv" ]] || { echo "no $SOURCES/train.csv: run scripts/fetch_training_sources.sh first" >&2; exit 1; }
[[ -f "$AIGI" ]] || { echo "no $AIGI: the dev set is needed" >&2; exit 1; }
COMMON=(--set "expert.pretrained=$FEATDISTILL_STARTER_CLIP"
        --set "data.sources=[{path: $AIGI}, {path: $SOURCES/train.csv, limit: 1200}]"
        --set "data.view_bank.dir=$OUT/view-bank")
PROBE=(--set "expert.preset=univfd:univfd-probe" --set "low_rank={rank: 0}"
       --set "stage1={epochs: 3, lr: 1.0e-3, warmup_steps: 10, min_lr_ratio: 0.05, trainable_blocks: none, weight_decay: 0.0}"
       --set "stage2={epochs: 0}")
