"""Four experts sharing a frozen trunk versus four independent experts, in one run.

    python bench/shared_trunk.py [--images 32] [--batch 16] [--dtypes float32,bfloat16]

Both ensembles are the starter's shape (CLIP ViT-B/16, four experts, each with its own head):
"shared" is the starter preset (blocks 0-9 held once and run once per image, blocks 10-11 and the
head per expert), "independent" the same four experts with nothing shared (four full towers).
Weights are random (speed and memory do not depend on them). Prints images/s of each, their
ratio, parameter bytes and the measured RSS growth of building each; writes
bench/results/shared-trunk.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, write_json  # noqa: E402
from detector import presets  # noqa: E402
from detector.expert import Expert  # noqa: E402
from detector.service import Detector  # noqa: E402


def ensemble(shared: bool) -> Detector:
    spec = presets.starter("bench")
    if not shared:
        spec = dataclasses.replace(spec, experts=tuple(
            dataclasses.replace(e, shared_blocks=0) for e in spec.experts))
    torch.manual_seed(0)
    first = Expert.build(spec.experts[0])
    experts = [first]
    for s in spec.experts[1:]:  # the same backbone weights, as a shared trunk requires
        other = Expert.build(s)
        other.backbone.load_state_dict(first.backbone.state_dict())
        experts.append(other)
    return Detector(spec, experts, "cpu")


def held_bytes(detector: Detector) -> int:
    """Bytes of distinct parameter storage (shared modules counted once)."""
    seen, total = set(), 0
    for e in detector.experts:
        for p in e.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total


def images_per_s(detector: Detector, pixels: torch.Tensor, dtype: str) -> float:
    detector.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    spec = detector.preprocess_specs[0]
    detector.probabilities_of({spec: pixels[: detector.batch_size]})  # warm-up
    with Timer() as t:
        detector.probabilities_of({spec: pixels})
    return len(pixels) / t.seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtypes", default="float32,bfloat16")
    args = p.parse_args()
    pixels = torch.randn(args.images, 3, 224, 224)
    rows = {}
    for name, shared in (("shared", True), ("independent", False)):
        gc.collect()
        detector = ensemble(shared)
        detector.batch_size = args.batch
        rows[name] = {"groups": detector.groups, "param_bytes_held": held_bytes(detector),
                      "blocks_run_per_image": 10 + 4 * 2 if shared else 4 * 12}
        for dtype in args.dtypes.split(","):
            rows[name][f"images_per_s_{dtype}"] = images_per_s(detector, pixels, dtype)
        del detector
    ratios = {f"speedup_{d}": rows["shared"][f"images_per_s_{d}"] / rows["independent"][f"images_per_s_{d}"]
              for d in args.dtypes.split(",")}
    ratios["memory_ratio"] = rows["shared"]["param_bytes_held"] / rows["independent"]["param_bytes_held"]
    print(f"{'ensemble':<12} {'held MB':>8} " + " ".join(f"{'img/s ' + d:>16}" for d in args.dtypes.split(",")))
    for name, row in rows.items():
        print(f"{name:<12} {row['param_bytes_held'] / 1e6:>8.1f} " + " ".join(
            f"{row['images_per_s_' + d]:>16.2f}" for d in args.dtypes.split(",")))
    print("shared / independent: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    path = write_json("shared-trunk", {"args": vars(args), "rows": rows, "ratios": ratios,
                                       "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
