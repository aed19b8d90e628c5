#!/usr/bin/env bash
# Import the git-repository training sources (train/sources/git_sources.py; see the section
# "Sources from git repositories" of train/sources/DATACARD.md) into
# ${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}/sources, then rewrite the index over every
# imported source (train.csv, heldout.csv, eval_only.csv).
#
# You clone the repositories yourself, into ${FEATDISTILL_GIT_ROOT:-$FEATDISTILL_CACHE/git}
# (one folder per repository, named owner+name). Print the exact commands with
#     scripts/fetch_modern_sources.sh --clone-commands
# or let this script run them with --clone (it then needs github.com). Each import reads its
# pinned commit from the clone (git ls-tree / cat-file: nothing is checked out or executed) and
# fails with a one-line message when the commit is missing.
#
# Other arguments go to `python -m train.sources.git_cli`: --list, --only NAME ..., --force,
# --report, --git-root DIR, --root DIR. Idempotent: a source already imported from the same
# commit with the same rules is skipped.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=/dev/null
source scripts/env.sh

clone=0
args=()
for a in "$@"; do
    if [ "$a" = "--clone" ]; then clone=1; else args+=("$a"); fi
done
if [ "$clone" = 1 ]; then
    python -m train.sources.git_cli --clone-commands ${args[@]+"${args[@]}"} | while read -r line; do
        dest="$(echo "$line" | awk '{print $4}')"
        if [ -d "$dest" ]; then echo "fetch_modern_sources: $dest exists, skipped" >&2; continue; fi
        mkdir -p "$(dirname "$dest")"
        bash -c "$line"
    done
fi
exec python -m train.sources.git_cli ${args[@]+"${args[@]}"}
