"""Memory of the ensembles: parameter bytes in fp32 and bf16 (built on the meta device, so no
memory is spent), and on CUDA the peak memory of a real forward pass.

    python bench/memory.py [--cuda-batch 32]

The paper reports about 10 GB peak GPU memory for its four experts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from detector import presets  # noqa: E402
from detector.expert import Expert, param_bytes  # noqa: E402
from detector.service import Detector  # noqa: E402


def parameter_bytes(preset: str) -> dict:
    with torch.device("meta"):
        experts = [Expert.build(s) for s in presets.PRESETS[preset]().experts]
    return {
        "params": sum(p.numel() for e in experts for p in e.parameters()),
        "fp32_bytes": sum(param_bytes(e, torch.float32) for e in experts),
        "bf16_bytes": sum(param_bytes(e, torch.bfloat16) for e in experts),
    }


def cuda_peak(preset: str, batch: int) -> dict | None:
    if not torch.cuda.is_available():
        return None
    from PIL import Image

    spec = presets.PRESETS[preset]()
    experts = [Expert.build(s) for s in spec.experts]
    detector = Detector(spec, experts, device="cuda", dtype="bfloat16", batch_size=batch)
    images = [Image.new("RGB", (512, 384), (i, 100, 200)) for i in range(batch)]
    torch.cuda.reset_peak_memory_stats()
    detector.predict(images)
    torch.cuda.synchronize()
    return {"batch": batch, "peak_bytes": detector.peak_memory_bytes(),
            "weights_bytes": detector.param_bytes(), "device": torch.cuda.get_device_name(0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cuda-batch", type=int, default=32)
    args = parser.parse_args(argv)
    sizes = {name: parameter_bytes(name) for name in ("paper", "base", "tiny")}
    print(f"{'preset':<8} {'params':>15} {'fp32 GB':>9} {'bf16 GB':>9} {'bf16/fp32':>10}")
    for name, s in sizes.items():
        print(f"{name:<8} {s['params']:>15,} {s['fp32_bytes'] / 1e9:>9.3f} "
              f"{s['bf16_bytes'] / 1e9:>9.3f} {s['bf16_bytes'] / s['fp32_bytes']:>10.2f}")
    peak = cuda_peak("paper", args.cuda_batch)
    if peak is None:
        print("no CUDA device here: peak GPU memory not measured (run this on a GPU node)")
    else:
        print(f"paper preset on {peak['device']}: peak {peak['peak_bytes'] / 1e9:.2f} GB at batch "
              f"{peak['batch']} (weights {peak['weights_bytes'] / 1e9:.2f} GB, fp32 weights, bf16 autocast)")
    print(f"wrote {write_json('memory', {'parameters': sizes, 'cuda_peak': peak})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
