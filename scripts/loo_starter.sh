#!/usr/bin/env bash
# Leave-one-generator-out for the starter recipe and the UnivFD probe, on this machine's CPU.
#   bash scripts/loo_starter.sh [OUT] [GENERATORS]   (default OUT /tmp/fd-starter, all 7 aigi ones)
# Each fold holds out one generator of ../shared/data/aigi (its AI images and the same share of
# reals) and trains one expert with the starter recipe (starter.yaml, stage 1 shortened to one
# epoch to fit the CPU budget) and the probe, on the same pool as scripts/train_starter.sh, so
# they reuse its view bank; then `featdistill eval --loo` scores both on what the fold held out,
# clean and after JPEG q30. Ends with a table of all folds (OUT/loo/summary.md).
set -euo pipefail
OUT="${1:-/tmp/fd-starter}"
GENS="${2:-dalle-mini latent-diffusion glid-3 disco-diffusion simulacra-vqgan stable-diffusion-2022 majesty-diffusion}"
source "$(dirname "${BASH_SOURCE[0]}")/starter_common.sh"
for g in $GENS; do
  fold="$OUT/loo/$g"
  split=(--set "data.split={kind: leave_out, holdout: [$g], seed: 0}")
  [[ -f "$fold/expert/adapter.safetensors" ]] || featdistill train examples/train/starter.yaml \
    --out "$fold/expert" "${COMMON[@]}" "${split[@]}" --set "version=loo-$g" \
    --set "stage1.epochs=1" >/dev/null
  [[ -f "$fold/probe/adapter.safetensors" ]] || featdistill train examples/train/starter.yaml \
    --out "$fold/probe" "${COMMON[@]}" "${split[@]}" "${PROBE[@]}" --set "version=loo-probe-$g" \
    >/dev/null
  [[ -f "$fold/report/report.json" ]] || featdistill eval --bundle "$fold/expert/bundle" \
    --bundle "$fold/probe/bundle" --data "$AIGI" --loo --jpeg 30 --dtype fast \
    --out "$fold/report"
done
python - "$OUT/loo" $GENS <<'PY'
import json, sys
from pathlib import Path
root, gens = Path(sys.argv[1]), sys.argv[2:]
lines = ["| held-out generator | fakes | reals | starter expert AUC | JPEG q30 | probe AUC | JPEG q30 |",
         "|---|---|---|---|---|---|---|"]
means = [[], [], [], []]
for g in gens:
    doc = json.loads((root / g / "report" / "report.json").read_text())
    cells = []
    for b in doc["bundles"]:
        m = b["per_generator"][g]["ensemble"]
        q30 = next(r for r in b["robustness"] if r["family"] == "jpeg")["per_generator_auc"][g]
        cells += [m["auc"], q30]
    n = doc["bundles"][0]["per_generator"][g]["ensemble"]
    for k, v in enumerate(cells):
        means[k].append(v)
    lines.append(f"| {g} | {n['n_fake']} | {n['n_real']} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
lines.append("| **mean** | | | " + " | ".join(f"**{sum(v) / len(v):.3f}**" for v in means) + " |")
(root / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
