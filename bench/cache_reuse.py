"""Does the verdict cache reuse a verdict only for the same picture? Measured on photos.

    python bench/cache_reuse.py --images 300
    PYTHONPATH=/tmp/pdq python bench/cache_reuse.py --images 300   # pdqhash importable: PDQ too

Photos come from ../shared/data/aigi/real (else scikit-image's bundled photos, else the bench
skips). Each photo is the cached original; bench/cache_variants.py makes its variants: the same
pixels (same bytes, PNG, EXIF edited, EXIF orientation), re-encodes (JPEG q50-95, rescaled
0.5-2x), local edits of 2/5/10% of the area (replaced by another photo's patch, smoothly
refilled from the borders, blurred away, copy-moved), colour edits of 2/5/10% (a region's chroma
swapped or taken from another photo, its grey kept), crafted pHash collisions, and, reported
apart with no target, the same picture with pixel noise (its pHash forced back). Each policy
says whether the original's verdict would be reused for the variant:

  phash_key         the worker before issue 12: reuse when the exact pHash key matches
  phash_key+verify  the same key, then worker/cache_match.py's verification
  phash_probes      16 pHash probes (the 4 weakest bits flipped), no verification
  worker            what the worker does now: 16 pHash probes, then the verification
  pdq_key           PDQ (256 bits) as an exact key
  pdq_31            PDQ within Hamming distance 31 (Meta's usual threshold; needs an index)
  pdq_31+verify     that, then the same verification

Wanted: re-encodes reused >= 95%, edits and collisions reused <= 1%, colour edits refused. An
edit that changes its region less than a JPEG q50 re-encode changes it (mean grey difference;
chroma for colour edits) is counted, and also reported apart as "invisible": no rule that
accepts q50 re-encodes can refuse it.
Results: bench/results/cache-reuse.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cache_variants import (  # noqa: E402
    Variant, collisions, colour_edits, encode, local_edits, reencodes, region_change, same_picture,
)
from bench.common import write_json  # noqa: E402
from detector.images import IMAGE_SUFFIXES, decode_image  # noqa: E402
from worker.cache_match import CacheLookup, SIGNATURE_BYTES, Signature, fingerprint, match  # noqa: E402
from worker.hashing import hamming, phash  # noqa: E402
from worker.metrics import Metrics  # noqa: E402

try:
    import pdqhash  # optional: only for the comparison; the worker does not use it
except ImportError:
    pdqhash = None

PHOTOS = ROOT.parent / "shared" / "data" / "aigi" / "real"
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry",
                  "hubble_deep_field", "retina", "motorcycle_left", "motorcycle_right")
PDQ_THRESHOLD = 31
RESULT = {"score": 0.25, "experts": {"a": 0.2, "b": 0.3}, "spread": 0.1}


def photos(limit: int) -> tuple[str, list[bytes]]:
    """(where from, JPEG bytes of up to `limit` photos spread over the set)."""
    if PHOTOS.is_dir():
        files = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[::max(1, len(files) // limit)][:limit]
        return "../shared/data/aigi/real (dev set photos)", [_as_jpeg(p.read_bytes()) for p in files]
    try:
        from skimage import data
    except ImportError:
        return "", []
    blobs = []
    for name in SKIMAGE_PHOTOS[:limit]:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 (a photo that needs a download or is absent: skip it)
            continue
        from PIL import Image
        blobs.append(encode(Image.fromarray(arr).convert("RGB"), quality=95))
    return "skimage.data", blobs


def _as_jpeg(data: bytes) -> bytes:
    return data if data[:2] == b"\xff\xd8" else encode(decode_image(data), quality=95)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def entry_bytes() -> int:
    """Size of one cache value (four experts, as the starter ensemble has)."""
    from PIL import Image
    img = Image.new("RGB", (64, 64))
    result = {"score": 0.123456789, "spread": 0.123456789,
              "experts": {f"expert-{i}": 0.123456789 for i in range(4)}}
    return len(CacheLookup("x", Metrics()).entry(fingerprint(b"", img), result).encode())


def pdq(img) -> np.ndarray | None:
    return None if pdqhash is None else pdqhash.compute(np.asarray(img))[0]


class Timings:
    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.megapixels: list[float] = []

    def time(self, name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds[name].append(time.perf_counter() - t0)
        return out

    def summary(self) -> dict:
        per_image = {k: round(1000 * float(np.mean(v)), 3) for k, v in self.seconds.items()}
        return {"ms_per_image": per_image, "mean_megapixels": round(float(np.mean(self.megapixels)), 3)}


def judge_variant(v: Variant, other_state, lookup: CacheLookup, timings: Timings) -> dict:
    """Every policy's decision for one variant of one original."""
    fp0, entry, store, pdq0 = other_state
    img = decode_image(v.data)
    timings.megapixels.append(img.width * img.height / 1e6)
    fp = timings.time("fingerprint (worker)", fingerprint, v.data, img)
    timings.time("phash alone", phash, img)
    timings.time("signature alone", Signature.of, img)
    verified = match(fp, entry)
    probed = [store[k] for k in lookup.keys(fp) if k in store]
    found = lookup.find(fp, probed)
    row = {
        "name": v.name, "group": v.group, "phash_distance": hamming(fp.phash, fp0.phash),
        "phash_key": fp.phash == fp0.phash,
        "phash_key+verify": fp.phash == fp0.phash and verified is not None,
        "phash_probes": fp0.phash in fp.probes,
        "worker": found is not None, "worker_kind": found[0] if found else None,
    }
    if pdqhash is not None:
        d = int((timings.time("pdq", pdq, img) != pdq0).sum())
        row.update({"pdq_distance": d, "pdq_key": d == 0, "pdq_31": d <= PDQ_THRESHOLD,
                    "pdq_31+verify": d <= PDQ_THRESHOLD and verified is not None})
    return row


def run(blobs: list[bytes], seed: int) -> tuple[list[dict], dict, int]:
    rng = np.random.default_rng(seed)
    lookup = CacheLookup("bench", Metrics())
    timings, rows, failed = Timings(), [], 0
    images = [decode_image(b) for b in blobs]
    for i, (original, img) in enumerate(zip(blobs, images)):
        other = images[(i + 7) % len(images)]
        fp0 = fingerprint(original, img)
        entry = lookup.entry(fp0, RESULT)
        state = (fp0, entry, {lookup.key(fp0): entry}, pdq(img))
        q50 = encode(img, quality=50)
        crafted, lost = collisions(img, other, rng, phash)
        failed += lost
        variants = same_picture(original, img) + reencodes(img, rng) + local_edits(img, other, rng)
        for v in variants + crafted + colour_edits(img, other, rng):
            row = judge_variant(v, state, lookup, timings)
            row["photo"] = i
            if v.region is not None:  # grey change for edits, chroma change for colour edits
                channels = "CbCr" if v.group == "colour" else "L"
                change = region_change(img, v.data, v.region, channels)
                jpeg = region_change(img, q50, v.region, channels)
                row["region_change"], row["q50_region_change"] = round(change, 3), round(jpeg, 3)
                row["invisible"] = change <= max(1.5, 1.5 * jpeg)
            rows.append(row)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(blobs)} photos", file=sys.stderr, flush=True)
    return rows, timings.summary(), failed


def policies(rows: list[dict]) -> list[str]:
    names = ["phash_key", "phash_key+verify", "phash_probes", "worker"]
    return names + (["pdq_key", "pdq_31", "pdq_31+verify"] if "pdq_key" in rows[0] else [])


def rate(rows: list[dict], policy: str) -> float | None:
    return round(float(np.mean([r[policy] for r in rows])), 4) if rows else None


def aggregate(rows: list[dict]) -> dict:
    out: dict = {"by_variant": {}, "summary": {}}
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_name[r["name"]].append(r)
    for name, rs in by_name.items():
        entry = {"group": rs[0]["group"], "n": len(rs), **{p: rate(rs, p) for p in policies(rows)}}
        for h in ("phash", "pdq"):
            if f"{h}_distance" in rs[0]:
                d = [r[f"{h}_distance"] for r in rs]
                entry[f"{h}_distance_median_p95"] = [float(np.median(d)), float(np.percentile(d, 95))]
        if "invisible" in rs[0]:
            visible = [r for r in rs if not r["invisible"]]
            entry["n_invisible"] = len(rs) - len(visible)
            entry["worker_visible_only"] = rate(visible, "worker")
        out["by_variant"][name] = entry
    edits = [r for r in rows if r["group"] == "edit"]
    for p in policies(rows):
        out["summary"][p] = {
            "same_picture_hit": rate([r for r in rows if r["group"] == "same"], p),
            "reencode_hit": rate([r for r in rows if r["group"] == "reencode"], p),
            "edit_false_reuse": rate(edits, p),
            "edit_false_reuse_visible": rate([r for r in edits if not r["invisible"]], p),
            "worst_edit_false_reuse": max(out["by_variant"][n][p] for n in by_name
                                          if by_name[n][0]["group"] == "edit"),
            "collision_false_reuse": rate([r for r in rows if r["group"] == "collision"], p),
            "noise_reuse": rate([r for r in rows if r["group"] == "noise"], p),
            "colour_reuse": rate([r for r in rows if r["group"] == "colour"], p),
            "worst_colour_reuse": max(out["by_variant"][n][p] for n in by_name
                                      if by_name[n][0]["group"] == "colour"),
            "colour_reuse_visible": rate([r for r in rows
                                          if r["group"] == "colour" and not r["invisible"]], p),
        }
    worker_kinds = defaultdict(int)
    for r in rows:
        if r["group"] in ("same", "reencode"):
            worker_kinds[f'{r["group"]}:{r["worker_kind"]}'] += 1
    out["worker_hit_kinds"] = dict(worker_kinds)
    return out


def print_report(agg: dict, rows: list[dict], timings: dict, source: str, photos_n: int,
                 failed: int) -> None:
    ps = policies(rows)
    print(f"\nphotos: {photos_n} from {source}; variants: {len(rows)}; "
          f"collision constructions that failed: {failed}")
    print("reuse rate per variant (hit rate for same/reencode, FALSE reuse for edit/collision)")
    print(f"{'variant':<30}{'group':<10}{'n':>5}" + "".join(f"{p:>17}" for p in ps)
          + f"{'worker,visible':>16}")
    for name, e in agg["by_variant"].items():
        vis = e.get("worker_visible_only")
        print(f"{name:<30}{e['group']:<10}{e['n']:>5}" + "".join(f"{e[p]:>17.3f}" for p in ps)
              + (f"{vis:>16.3f}" if vis is not None else f"{'':>16}"))
    print("\nsummary")
    for p in ps:
        s = agg["summary"][p]
        print(f"  {p:<17} same {s['same_picture_hit']:.3f}  re-encode hit {s['reencode_hit']:.3f}"
              f"  edit false reuse {s['edit_false_reuse']:.4f} (visible {s['edit_false_reuse_visible']:.4f},"
              f" worst kind {s['worst_edit_false_reuse']:.3f})  collisions {s['collision_false_reuse']:.3f}"
              f"  noise {s['noise_reuse']:.3f}  colour {s['colour_reuse']:.3f}")
    w, old = agg["summary"]["worker"], agg["summary"]["phash_key"]
    print(f"\nworker: re-encode hit {w['reencode_hit']:.1%} (target >= 95%), edit false reuse "
          f"{w['edit_false_reuse']:.2%}, visible edits {w['edit_false_reuse_visible']:.2%} "
          f"(target <= 1%), collisions {w['collision_false_reuse']:.2%}, colour edits "
          f"{w['colour_reuse']:.2%} (visible {w['colour_reuse_visible']:.2%})")
    print(f"ratios vs phash_key: re-encode hits x{w['reencode_hit'] / old['reencode_hit']:.3f}, "
          f"edit false reuse x{w['edit_false_reuse'] / max(old['edit_false_reuse'], 1e-9):.4f}, "
          f"collision false reuse x{w['collision_false_reuse'] / max(old['collision_false_reuse'], 1e-9):.4f}")
    if "pdq_31" in ps:
        pd = agg["summary"]["pdq_31"]
        print(f"pdq_31 vs worker: re-encode hit {pd['reencode_hit']:.3f} vs {w['reencode_hit']:.3f}, "
              f"edit false reuse {pd['edit_false_reuse']:.3f} vs {w['edit_false_reuse']:.4f}")
    else:
        print("pdqhash not importable: PDQ not compared (pip install --target /tmp/pdq pdqhash)")
    print(f"cost per image: {timings['ms_per_image']} (mean {timings['mean_megapixels']} MP); "
          f"signature {SIGNATURE_BYTES} bytes, cache value {entry_bytes()} bytes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="photos to use (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)
    source, blobs = photos(args.images)
    if len(blobs) < 2:
        print("cache_reuse: skipped: no photos (neither ../shared/data/aigi/real nor "
              "scikit-image's data is available)")
        return 0
    rows, timings, failed = run(blobs, args.seed)
    agg = aggregate(rows)
    print_report(agg, rows, timings, source, len(blobs), failed)
    if not args.no_save:
        path = write_json("cache-reuse", {
            "photos": len(blobs), "source": source, "seed": args.seed,
            "pdqhash": _version("pdqhash") if pdqhash else None, "entry_bytes": entry_bytes(),
            "signature_bytes": SIGNATURE_BYTES, "collision_constructions_failed": failed,
            "timings": timings, **agg})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
