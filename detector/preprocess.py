"""The per-expert input pipeline, derived from its PreprocessSpec alone.

Training and inference both call `to_tensor`, so they cannot disagree. The operations follow the
reference transforms (open_clip's torchvision pipeline, transformers' image processors): PIL
resampling on uint8 images, torchvision's rounding for sizes and centre crops.

An image need not arrive at full resolution: `decode_side` is the short side it may be reduced to
while decoding (detector.images.decode_image's min_side) and still give about the same tensors.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from detector.spec import PreprocessSpec

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


# Decode to at least 1.5x the largest input side. The resize below is antialiased: its filter
# spans the whole reduction, so what a cheap reduction before it (JPEG DCT scaling, box filter)
# did to the pixels is mostly averaged away when the resize still reduces 1.5x or more.
# bench/decode_fidelity.py measures the score change: at 1.5 the starter's AUC moves by at most
# 0.0035 (2: 0.0029; 1: 0.0084, too much), and half as many pixels are decoded, hashed and
# resized as at 2 (bench/preinference.py).
DECODE_MARGIN = 1.5


def decode_side(specs: Iterable[PreprocessSpec], margin: float = DECODE_MARGIN) -> int:
    """The short side images must keep, when reduced at decode, for every one of these pipelines:
    margin x the largest input size. Enough for every resize mode: shortest and squash bring the
    short side down to `size`, longest brings the long side (which is longer) down to it."""
    return math.ceil(margin * max(spec.size for spec in specs))


def _resize(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    w, h = img.size
    size = spec.size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "squash":
        return img.resize((size, size), resample)
    if spec.resize_mode == "shortest":
        # torchvision.Resize(int): the short side becomes `size`, the long side is truncated.
        if w <= h:
            new = (size, int(size * h / w))
        else:
            new = (int(size * w / h), size)
    else:  # longest: the long side becomes `size`; the crop below pads the short side.
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new == (w, h):
        return img
    return img.resize(new, resample)


def _centre_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w < size or h < size:  # pad with black, as torchvision's CenterCrop does
        canvas = Image.new("RGB", (max(w, size), max(h, size)))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img, (w, h) = canvas, canvas.size
    # torchvision rounds the offsets; int(x + 0.5) of a non-negative value is that rounding.
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    """One RGB PIL image -> normalised float32 tensor (3, size, size)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = _resize(img, spec)
    if spec.crop or spec.resize_mode == "longest":
        img = _centre_crop(img, spec.size)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_batch(images: Sequence[Image.Image], spec: PreprocessSpec) -> torch.Tensor:
    return torch.stack([to_tensor(img, spec) for img in images])
