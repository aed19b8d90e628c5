#!/usr/bin/env bash
# Regenerate the pinned, hash-checked dependency sets from pyproject.toml. Upgrading a dependency
# is a deliberate commit of the regenerated files, never something a fresh machine does alone.
#
#   requirements/dev.lock     every extra a developer needs (scripts/env.sh, CI)
#   requirements/worker.lock  the worker alone (deploy/docker/Dockerfile), pinned like dev.lock
#
# The sets are universal (markers for Python 3.11+ and each platform) so the CUDA image's Python
# and a developer's resolve to the same versions. Uses uv, installed into a throwaway venv.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"${PYTHON:-python3}" -m venv "$tools"
"$tools/bin/pip" install -q uv
compile=("$tools/bin/uv" pip compile pyproject.toml --universal --python-version 3.11
         --generate-hashes --no-header --annotation-style line -q)
"${compile[@]}" --extra worker --extra train --extra onnx --extra dev -o requirements/dev.lock
"${compile[@]}" --extra worker -c requirements/dev.lock -o requirements/worker.lock
echo "lock: $(grep -c '==' requirements/dev.lock) pins in dev.lock, $(grep -c '==' requirements/worker.lock) in worker.lock"
