"""A learnable toy task made of generated images, for tests, demos and the tiny example config.

"Real" images are smooth colour gradients with a little sensor-like noise; "fake" images are the
same kind of gradient with a faint periodic trace added: a checkerboard (generator `toy-checker`)
or stripes (`toy-stripes`). The trace has a 4-pixel period, so it survives the tiny presets' input
pipeline when the images are made at the model's input size.

An image is named by a `toy:` URI (`toy:<generator>:<size>:<seed>`), rendered on demand, so a toy
data source needs no files; `write_toy_dataset` writes the same images and a manifest to disk.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SCHEME = "toy:"
GENERATORS = ("toy-checker", "toy-stripes")
REAL = "real"


def toy_uri(generator: str, size: int, seed: int) -> str:
    return f"{SCHEME}{generator or REAL}:{size}:{seed}"


def is_toy(path: str) -> bool:
    return path.startswith(SCHEME)


def render(uri: str) -> Image.Image:
    """The image a toy URI names; the same URI always gives the same pixels."""
    try:
        generator, size, seed = uri[len(SCHEME):].split(":")
        size_px, seed_int = int(size), int(seed)
    except ValueError as exc:
        raise ValueError(f"malformed toy image URI {uri!r}") from exc
    rng = np.random.default_rng([seed_int, size_px])
    y, x = np.mgrid[0:size_px, 0:size_px].astype(np.float32) / max(size_px - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    low, high = rng.uniform(20, 110, 3), rng.uniform(140, 235, 3)
    arr = low + (high - low) * ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6))[..., None]
    arr += rng.normal(0, 3, arr.shape)
    amplitude = rng.uniform(25, 45)
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    if generator == "toy-checker":
        arr += amplitude * np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)[..., None]
    elif generator == "toy-stripes":
        lines = yy if rng.random() < 0.5 else xx
        arr += amplitude * np.where((lines // 2) % 2 == 0, 1.0, -1.0)[..., None]
    elif generator != REAL:
        raise ValueError(f"unknown toy generator {generator!r}; choose from {GENERATORS}")
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def toy_items(count: int, size: int, seed: int) -> list[tuple[str, int, str]]:
    """(uri, label, generator) for `count` images: half real, the rest split between generators."""
    items = []
    for i in range(count):
        generator = "" if i % 2 == 0 else GENERATORS[(i // 2) % len(GENERATORS)]
        items.append((toy_uri(generator, size, seed * 1_000_003 + i), int(bool(generator)), generator))
    return items


def write_toy_dataset(root: str | Path, count: int = 32, size: int = 32, seed: int = 0) -> Path:
    """Write toy images as PNG files under root (real/..., fake/<generator>/...) plus manifest.csv;
    returns the manifest's path."""
    root = Path(root)
    rows = []
    for i, (uri, label, generator) in enumerate(toy_items(count, size, seed)):
        rel = Path("real") / f"{i:04d}.png" if not label else Path("fake") / generator / f"{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        render(uri).save(root / rel)
        rows.append({"path": rel.as_posix(), "label": "fake" if label else "real",
                     "generator": generator, "source": "toy"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "generator", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
