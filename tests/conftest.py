"""Shared fixtures: tiny bundles and generated images. Nothing here reads ../shared/data."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector import presets
from detector.bundle import save_bundle
from detector.expert import Expert


def make_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth gradient plus noise: structured enough that resizing and cropping matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     (x + y) * 127 / max(width + height - 2, 1)], axis=-1)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def image_bytes(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_tiny_bundle(out: Path, seed: int = 0, version: str = "tiny-test") -> Path:
    torch.manual_seed(seed)
    spec = presets.tiny(version)
    save_bundle(out, spec, [Expert.build(s) for s in spec.experts], {"test": True})
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A read-only tiny bundle shared by the session; copy it before altering it."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    for i in range(5):
        make_image(40 + 8 * i, 36 + 4 * i, seed=i).save(folder / f"img{i}.png")
    make_image(50, 50, seed=9).save(folder / "nested" / "photo.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder
