#!/usr/bin/env bash
# Source me. Builds (once) and activates the project's Python environment.
#
# Third-party dependencies live in a venv cached outside the clone, keyed by a hash of the
# dependency spec in pyproject.toml, so CI and later sessions reuse the multi-GB torch install.
# The project itself goes into a small per-clone venv (.venv) that sees the cached one through a
# .pth file: an editable install never rewrites the shared cache to point at some other clone.
set -euo pipefail
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_cache="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}"
_python="${PYTHON:-python3}"
# The pinned, hash-checked dependency set (all extras a developer needs). Regenerate it with
# scripts/lock.sh after changing dependencies in pyproject.toml: upgrading is a deliberate commit.
_lock="$_repo/requirements/dev.lock"

_spec_hash="$( { cat "$_lock"; "$_python" -c 'import platform; print(platform.python_version())'; } \
    | sha256sum | cut -c1-16)"
_deps_venv="$_cache/venv-$_spec_hash"

mkdir -p "$_cache"
# One builder at a time: a second shell (a test run beside a demo) waits instead of racing.
exec 9>"$_cache/.lock-$_spec_hash"
flock 9
if [ ! -f "$_deps_venv/.complete" ]; then
    echo "featdistill: building dependency venv $_deps_venv from requirements/dev.lock" \
         "(first run only; torch with its CUDA libraries is about 4 GB: 3-6 min)" >&2
    rm -rf "$_deps_venv"
    "$_python" -m venv "$_deps_venv"
    if ! "$_deps_venv/bin/pip" install -q --upgrade pip \
        || ! "$_deps_venv/bin/pip" install -q --require-hashes --no-deps -r "$_lock"; then
        rm -rf "$_deps_venv"
        echo "featdistill: step 'dependencies' failed: pip could not install requirements/dev.lock;" \
             "check the network to PyPI and rerun" >&2
        flock -u 9
        return 1 2>/dev/null || exit 1
    fi
    touch "$_deps_venv/.complete"
fi

_local="$_repo/.venv"
# Re-install the project when pyproject.toml changes (entry points, packages), not only the deps.
_local_key="$_deps_venv $(sha256sum "$_repo/pyproject.toml" | cut -c1-16)"
_site_deps="$("$_deps_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -f "$_local/.deps" ] || [ "$(cat "$_local/.deps")" != "$_local_key" ] || [ ! -x "$_local/bin/featdistill" ]; then
    rm -rf "$_local"
    "$_python" -m venv "$_local"
    _site_local="$("$_local/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$_site_deps" > "$_site_local/_featdistill_deps.pth"
    "$_local/bin/python" -m pip install -q --no-deps -e "$_repo"
    echo "$_local_key" > "$_local/.deps"
fi
flock -u 9
exec 9>&-
export PATH="$_local/bin:$_deps_venv/bin:$PATH"
export VIRTUAL_ENV="$_local"
set +euo pipefail
