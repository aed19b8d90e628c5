#!/usr/bin/env bash
# Source me. Builds (once) and activates the project's Python environment; returns non-zero
# after one line naming the failed step if it cannot.
#
# Third-party dependencies live in a venv cached outside the clone, keyed by a digest of the
# pinned set (requirements/dev.lock) and the Python version, so CI and later sessions reuse the
# multi-GB torch install while a fresh machine builds it from scratch. The project itself goes
# into a small per-clone venv (.venv) that sees the cached one through a .pth file: an editable
# install never rewrites the shared cache to point at some other clone.
#
# Each step checks its own status rather than relying on errexit, which is off wherever the
# caller sources this inside `||` or `if`.

_featdistill_env_fail() {  # step hint
    echo "featdistill: step '$1' failed: $2" >&2
    return 1
}

_featdistill_env() {
    local repo cache python lock spec_hash deps_venv local_venv local_key site_deps site_local
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cache="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}"
    python="${PYTHON:-python3}"
    # The pinned, hash-checked dependency set (all extras a developer needs). Regenerate it with
    # scripts/lock.sh after changing dependencies in pyproject.toml: upgrading is a deliberate
    # commit.
    lock="$repo/requirements/dev.lock"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        { _featdistill_env_fail python "needs Python 3.11 or newer as python3 (or set PYTHON)"; return; }
    spec_hash="$( { cat "$lock"; "$python" -c 'import platform; print(platform.python_version())'; } |
        sha256sum | cut -c1-16)"
    deps_venv="$cache/venv-$spec_hash"

    mkdir -p "$cache" || { _featdistill_env_fail cache "cannot create $cache; set FEATDISTILL_CACHE"; return; }
    # One builder at a time: a second shell (a test run beside a demo) waits instead of racing.
    exec 9>"$cache/.lock-$spec_hash" && flock 9 || { _featdistill_env_fail cache "cannot lock $cache"; return; }
    if [ ! -f "$deps_venv/.complete" ]; then
        echo "featdistill: building dependency venv $deps_venv from requirements/dev.lock" \
             "(first run only; torch with its CUDA libraries is about 4 GB: 3-6 min)" >&2
        rm -rf "$deps_venv"
        if ! "$python" -m venv "$deps_venv" \
            || ! "$deps_venv/bin/pip" install -q --upgrade pip \
            || ! "$deps_venv/bin/pip" install -q --require-hashes --no-deps -r "$lock"; then
            rm -rf "$deps_venv"
            exec 9>&-
            _featdistill_env_fail dependencies "pip could not install requirements/dev.lock" \
                "(see its error above); check the network to PyPI and the disk, then rerun"
            return
        fi
        touch "$deps_venv/.complete"
    fi

    local_venv="$repo/.venv"
    # Re-install the project when pyproject.toml changes (entry points, packages), not only deps.
    local_key="$deps_venv $(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$local_venv/.deps" ] || [ "$(cat "$local_venv/.deps")" != "$local_key" ] \
        || [ ! -x "$local_venv/bin/featdistill" ]; then
        rm -rf "$local_venv"
        site_deps="$("$deps_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        if ! "$python" -m venv "$local_venv" \
            || ! site_local="$("$local_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
            || ! echo "$site_deps" > "$site_local/_featdistill_deps.pth" \
            || ! "$local_venv/bin/python" -m pip install -q --no-deps -e "$repo"; then
            rm -rf "$local_venv"
            exec 9>&-
            _featdistill_env_fail project "pip could not install this checkout into .venv (see above)"
            return
        fi
        echo "$local_key" > "$local_venv/.deps"
    fi
    exec 9>&-
    export PATH="$local_venv/bin:$deps_venv/bin:$PATH"
    export VIRTUAL_ENV="$local_venv"
}

_featdistill_env
_featdistill_status=$?
unset -f _featdistill_env _featdistill_env_fail
return "$_featdistill_status" 2>/dev/null || exit "$_featdistill_status"
