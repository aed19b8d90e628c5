"""Cost per image of each stage: fetch, decode, hash, preprocess, inference.

    python bench/stages.py --preset base --images 32 --batch 16

Every figure comes from the same run on the same images; the table ends with each stage's share
of the total, which is the number to compare across machines.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, make_images, random_bundle, write_json  # noqa: E402
from detector.images import decode_image  # noqa: E402
from detector.preprocess import to_batch  # noqa: E402
from detector.service import Detector  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.hashing import phash, sha256_hex  # noqa: E402


def measure(preset: str, count: int, batch: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fd-bench-"))
    paths = make_images(work / "images", count)
    detector = Detector.load(random_bundle(work / "bundle", preset, "bench"), batch_size=batch)
    fetcher = ImageFetcher(FetchConfig(file_roots=(str(work),)))
    ms = {}
    with Timer() as t:
        blobs = [fetcher.fetch(p.as_uri()) for p in paths]
    ms["fetch (file://)"] = t.seconds
    with Timer() as t:
        images = [decode_image(b, min_side=detector.decode_side) for b in blobs]  # as the worker
    ms["decode"] = t.seconds
    with Timer() as t:
        for img in images:
            phash(img)
    ms["perceptual hash"] = t.seconds
    with Timer() as t:
        for b in blobs:
            sha256_hex(b)
    ms["sha256"] = t.seconds
    specs = {e.spec.preprocess for e in detector.experts}
    with Timer() as t:
        tensors = {s: to_batch(images, s) for s in specs}
    ms["preprocess"] = t.seconds
    detector.predict(images[: min(2, count)])  # warm-up: first-call allocations
    with Timer() as t, torch.inference_mode():
        for expert in detector.experts:
            pixels = tensors[expert.spec.preprocess]
            for start in range(0, count, batch):
                expert(pixels[start : start + batch])
    ms["inference (4 experts)"] = t.seconds
    per_image = {k: v * 1000 / count for k, v in ms.items()}
    return {"preset": preset, "images": count, "batch": batch, "ms_per_image": per_image}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "paper"])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    result = measure(args.preset, args.images, args.batch)
    total = sum(result["ms_per_image"].values())
    print(f"stage costs per image, preset {args.preset}, {args.images} images, batch {args.batch}")
    print(f"{'stage':<24} {'ms/image':>10} {'share':>8}")
    for stage, value in result["ms_per_image"].items():
        print(f"{stage:<24} {value:>10.3f} {value / total:>8.1%}")
    print(f"{'total':<24} {total:>10.3f}")
    print(f"wrote {write_json(f'stages-{args.preset}', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
