# Source me. `step NAME HINT CMD...` runs CMD; if it fails, prints one line naming the step and
# what to do, and exits, so nothing starts after a failure.
step() {
    local name="$1" hint="$2"
    shift 2
    if ! "$@"; then
        echo "featdistill: step '$name' failed: $hint" >&2
        exit 1
    fi
}
