"""Shared bits of the benchmarks: images, bundles, timing, reporting."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from detector import presets
from detector.bundle import save_bundle
from detector.expert import Expert

RESULTS = Path(__file__).resolve().parent / "results"


def make_images(folder: Path, count: int, size: tuple[int, int] = (320, 240), seed: int = 0):
    """Distinct JPEGs with shapes on a gradient (photo-like structure, distinct pHashes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, 3)
        img = Image.new("RGB", size, tuple(int(c) for c in base))
        draw = ImageDraw.Draw(img)
        for _ in range(8):
            x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            w, h = (int(v) for v in rng.integers(20, 120, 2))
            draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = folder / f"bench-{i:05d}.jpg"
        img.filter(ImageFilter.GaussianBlur(1)).save(path, quality=90)
        paths.append(path)
    return paths


def random_bundle(out: Path, preset: str, version: str) -> Path:
    """Random weights of a preset's shape; experts declaring a shared trunk get the same backbone
    weights (as trained ones would), so the Detector shares it."""
    torch.manual_seed(0)
    spec = presets.PRESETS[preset](version)
    experts = [Expert.build(s) for s in spec.experts]
    for e in experts[1:]:
        if e.spec.shared_blocks and e.spec.backbone == experts[0].spec.backbone:
            e.backbone.load_state_dict(experts[0].backbone.state_dict())
    save_bundle(out, spec, experts, {"bench": True})
    return out


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
