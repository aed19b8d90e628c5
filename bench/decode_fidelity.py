"""Do the detector's scores move when images are reduced at decode? Full decode vs reduced.

    python bench/decode_fidelity.py --bundle DIR [--manifest ../shared/data/aigi/manifest.csv]
        [--margins 2,1.5,1] [--jpeg-shares 1,0.667] [--sets as-is,phone-jpeg,png] [--limit N]

Images: the bundle's held-out split of the dev set, rebuilt from its provenance as `featdistill
eval --loo` does (for the starter: the disco- and majesty-diffusion renders and 25 % of the
ImageNet photos). Most of those files are smaller than twice the input side, so decoding them
reduced changes nothing; the same images are therefore also judged as camera-sized files
(bench/photos.py, made once under the cache folder):
  as-is       the files themselves
  phone-jpeg  each image as a 12 MP phone JPEG with EXIF orientation (the JPEG draft path)
  png         each image as a 2 MP PNG with EXIF orientation (decode whole, then Image.reduce)
  phone-jpeg-4mp  as a 4.4 MP phone JPEG: a short side of about 1,800 px, which the 1/8 draft
              takes to just above 224, the worker's JPEG floor for the starter, while a draft to
              min_side (336) stops at 1/4. The hardest case for JPEG_DRAFT_SHARE (at 12 MP both
              stop at 1/8, at 375 px); not in the default sets.
For each set the full decode is scored once, then each margin's reduced decode
(min_side = margin x the largest input side; 1.5 is detector.preprocess.DECODE_MARGIN), with
JPEGs drafted to each of --jpeg-shares x min_side (detector.images.JPEG_DRAFT_SHARE, 1, is the
worker's; 0.667 drafts them to 1x the input side at margin 1.5, measured and refused).
A variant is named `<margin>` for the worker's share and `<margin>/jpeg<share>` for the others.
Only images whose input tensors changed are run again; the others keep their scores exactly, and
a variant that decodes every image as an earlier one did (the PNGs at any share) reuses its row.

Reported per set and margin: AUC (ensemble) full and reduced, the mean and largest absolute
change of the ensemble score, labels flipped at the bundle's threshold, the tensors' mean
absolute change (normalised units), and pHash bits changed (the cache key). fp32 on CPU.
Writes bench/results/decode-fidelity.json.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from bench.photos import cached_phone_files  # noqa: E402
from detector.bundle import read_manifest as read_bundle  # noqa: E402
from detector.images import JPEG_DRAFT_SHARE, load_image_file  # noqa: E402
from detector.preprocess import DECODE_MARGIN, decode_side, to_tensor  # noqa: E402
from detector.service import Detector  # noqa: E402
from train.data.records import read_manifest  # noqa: E402
from train.evaluate.metrics import roc_auc  # noqa: E402
from train.evaluate.scoring import loo_subset  # noqa: E402
from worker.hashing import hamming, phash  # noqa: E402

DEV_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "manifest.csv"
SETS = {"as-is": None, "phone-jpeg": (12.0, "JPEG"), "png": (2.0, "PNG"),
        "phone-jpeg-4mp": (4.4, "JPEG")}


def heldout(bundle: Path, manifest: Path, limit: int) -> tuple[list[Path], np.ndarray]:
    samples = read_manifest(manifest)
    subset, _ = loo_subset(samples, read_bundle(bundle).provenance)
    if not subset:
        sys.exit(f"{bundle}: its provenance records no held-out split of {manifest}")
    if limit:  # both classes kept: every k-th image
        subset = subset[:: max(1, len(subset) // limit)][:limit]
    return [Path(s.path) for s in subset], np.array([s.label for s in subset])


def decode_all(paths: list[Path], detector: Detector, min_side: int | None,
               jpeg_share: float = JPEG_DRAFT_SHARE):
    """Input tensors per preprocessing, pHashes and decoded sizes of every image."""
    specs = detector.preprocess_specs
    inputs = {spec: [] for spec in specs}
    hashes, sizes = [], []
    for path in paths:
        img = load_image_file(path, min_side=min_side, jpeg_draft_share=jpeg_share)
        for spec in specs:
            inputs[spec].append(to_tensor(img, spec))
        hashes.append(phash(img))
        sizes.append(img.size)
    return {s: torch.stack(t) for s, t in inputs.items()}, hashes, sizes


def probabilities(detector: Detector, inputs, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(experts, n) P(fake), of the given rows only."""
    if rows is not None:
        inputs = {s: t[rows] for s, t in inputs.items()}
    return detector.probabilities_of(inputs)


def compare(detector: Detector, labels: np.ndarray, full: dict, reduced: dict) -> dict:
    changed = torch.zeros(len(labels), dtype=torch.bool)
    diff = torch.zeros(len(labels))
    for spec, t in reduced["inputs"].items():
        d = (t - full["inputs"][spec]).abs().flatten(1).mean(1)
        changed |= d > 0
        diff = torch.maximum(diff, d)
    probs = full["probs"].clone()
    if changed.any():
        probs[:, changed] = probabilities(detector, reduced["inputs"], changed)
    old, new = full["probs"].mean(0).numpy(), probs.mean(0).numpy()
    delta = np.abs(new - old)
    mask = changed.numpy()
    bits = [hamming(a, b) for a, b in zip(full["hashes"], reduced["hashes"])]
    t = detector.threshold
    return {
        "n": len(labels), "n_fake": int(labels.sum()), "n_tensor_changed": int(changed.sum()),
        "auc_full": roc_auc(labels, old), "auc_reduced": roc_auc(labels, new),
        "auc_change": roc_auc(labels, new) - roc_auc(labels, old),
        "mean_abs_score_change": float(delta.mean()),
        "mean_abs_score_change_changed": float(delta[mask].mean()) if mask.any() else 0.0,
        "p95_abs_score_change": float(np.percentile(delta, 95)),
        "max_abs_score_change": float(delta.max()),
        "label_flips": int(((new >= t) != (old >= t)).sum()),
        "expert_mean_abs_change": {e.spec.name: float((probs[i] - full["probs"][i]).abs().mean())
                                   for i, e in enumerate(detector.experts)},
        "tensor_mean_abs_change": float(diff[changed].mean()) if changed.any() else 0.0,
        "phash_changed": sum(b > 0 for b in bits), "phash_mean_bits": float(np.mean(bits)),
        "decoded_short_side_median": float(np.median([min(s) for s in reduced["sizes"]])),
    }


def run_set(detector: Detector, paths: list[Path], labels: np.ndarray,
            margins: list[float], shares: list[float]) -> dict:
    t0 = time.perf_counter()
    inputs, hashes, sizes = decode_all(paths, detector, None)
    full = {"inputs": inputs, "hashes": hashes, "sizes": sizes,
            "probs": probabilities(detector, inputs)}
    out = {"full_short_side_median": float(np.median([min(s) for s in sizes])), "margins": {}}
    done = []  # (inputs, row) of the variants run so far
    for margin in margins:
        side = decode_side(detector.preprocess_specs, margin)
        for share in shares:
            inputs, hashes, sizes = decode_all(paths, detector, side, share)
            same = next((row for prev, row in done if _same_inputs(prev, inputs)), None)
            row = same if same is not None else compare(
                detector, labels, full, {"inputs": inputs, "hashes": hashes, "sizes": sizes})
            done.append((inputs, row))
            name = f"{margin:g}" if share == JPEG_DRAFT_SHARE else f"{margin:g}/jpeg{share:.3g}"
            out["margins"][name] = {"min_side": side, "jpeg_draft_side": math.ceil(side * share),
                                    **row}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _same_inputs(a: dict, b: dict) -> bool:
    return all(torch.equal(a[spec], b[spec]) for spec in a)


def set_paths(name: str, paths: list[Path]) -> list[Path]:
    if SETS[name] is None:
        return paths
    megapixels, fmt = SETS[name]
    return cached_phone_files(paths, megapixels, fmt, tag="fidelity")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=DEV_MANIFEST)
    parser.add_argument("--margins", default=f"{DECODE_MARGIN:g}",
                        help="comma-separated multiples of the input side to decode to")
    parser.add_argument("--jpeg-shares", default=f"{JPEG_DRAFT_SHARE:g}",
                        help="JPEG draft sides as shares of min_side (the first: the worker's)")
    parser.add_argument("--sets", default="as-is,phone-jpeg,png")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default="decode-fidelity")
    args = parser.parse_args(argv)
    margins = [float(m) for m in args.margins.split(",")]
    # The worker's share by its exact value, so that its rows carry the plain margin's name.
    shares = [JPEG_DRAFT_SHARE if abs(float(s) - JPEG_DRAFT_SHARE) < 1e-3 else float(s)
              for s in args.jpeg_shares.split(",")]
    detector = Detector.load(args.bundle, device="cpu", dtype="float32", batch_size=args.batch)
    paths, labels = heldout(args.bundle, args.manifest, args.limit)
    print(f"{len(paths)} held-out images ({int(labels.sum())} AI), bundle "
          f"{detector.version}, decode_side {detector.decode_side}", flush=True)
    result = {"bundle": detector.version, "digest": detector.digest[:16], "dtype": "float32",
              "images": len(paths), "fake": int(labels.sum()), "sets": {}}
    for name in args.sets.split(","):
        res = run_set(detector, set_paths(name, paths), labels, margins, shares)
        result["sets"][name] = res
        for margin, m in res["margins"].items():
            print(f"{name:<11} margin {margin:<10} changed {m['n_tensor_changed']:>3}/{m['n']}  "
                  f"AUC {m['auc_full']:.4f} -> {m['auc_reduced']:.4f}  "
                  f"mean |d score| {m['mean_abs_score_change']:.5f}  "
                  f"max {m['max_abs_score_change']:.4f}  flips {m['label_flips']}  "
                  f"pHash changed {m['phash_changed']}", flush=True)
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
