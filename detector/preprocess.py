"""The per-expert input pipeline, derived from its PreprocessSpec alone.

Training and inference both call `to_tensor`, so they cannot disagree. The operations follow the
reference transforms (open_clip's torchvision pipeline, transformers' image processors): PIL
resampling on uint8 images, torchvision's rounding for sizes and centre crops.

An image need not arrive at full resolution: `decode_side` is the short side it may be reduced to
while decoding (detector.images.decode_image's min_side) and still give about the same tensors.
"""
from __future__ import annotations

import dataclasses
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
# resized as at 2 (bench/preinference.py). JPEGs drafted to 1x instead were measured too and
# refused (detector.images.JPEG_DRAFT_SHARE).
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


def _pad_to(img: Image.Image, size: int) -> Image.Image:
    """Centred on black up to size x size where smaller, as torchvision's CenterCrop pads."""
    w, h = img.size
    if w >= size and h >= size:
        return img
    canvas = Image.new("RGB", (max(w, size), max(h, size)))
    canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return canvas


def _centre_crop(img: Image.Image, size: int) -> Image.Image:
    img = _pad_to(img, size)
    w, h = img.size
    # torchvision rounds the offsets; int(x + 0.5) of a non-negative value is that rounding.
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


# Test-time augmentation: a score may be the mean P(fake) over several views of an image. View 0
# is always the plain pipeline above, so one view scores exactly as before. The corner views
# come from the same pipeline resized TTA_SCALE larger (torchvision's FiveCrop/TenCrop after the
# classic resize-256-crop-224), so they see the image at almost the same scale, shifted.
TTA_SCALE = 256 / 224
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
# The view sets a user may choose: the centre and its mirror, the five crops, the ten crops.
TTA_VIEWS: dict[int, tuple[tuple[str, bool], ...]] = {
    1: (("centre", False),),
    2: (("centre", False), ("centre", True)),
    5: (("centre", False), *((c, False) for c in CORNERS)),
    10: (("centre", False), *((c, False) for c in CORNERS),
         ("centre", True), *((c, True) for c in CORNERS)),
}

TTA_HELP = ("test-time augmentation: score each image as the mean P(fake) over N views: 1 (off), "
            "2 (centre + mirror), 5 (centre + 4 corners), 10 (those and their mirrors); N x the cost")


def check_views(views: int) -> int:
    if views not in TTA_VIEWS:
        raise ValueError(f"test-time augmentation takes {sorted(TTA_VIEWS)} views, got {views}")
    return views


def _corner_crop(img: Image.Image, spec: PreprocessSpec, corner: str) -> Image.Image:
    # Corners of the whole resized image (FiveCrop's), so that the views cover all of it.
    img = _resize(img, dataclasses.replace(spec, size=round(spec.size * TTA_SCALE)))
    size = spec.size
    img = _pad_to(img, size)
    left = 0 if corner.endswith("left") else img.width - size
    top = 0 if corner.startswith("top") else img.height - size
    return img.crop((left, top, left + size, top + size))


def _view(img: Image.Image, spec: PreprocessSpec, crop: str = "centre", flip: bool = False) -> Image.Image:
    if img.mode != "RGB":
        img = img.convert("RGB")
    if crop == "centre":
        view = _resize(img, spec)
        if spec.crop or spec.resize_mode == "longest":
            view = _centre_crop(view, spec.size)
    else:
        view = _corner_crop(img, spec, crop)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view


def _normalise(img: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    # (x / 255 - mean) / std in float32, channels first: the same float32 operations in the same
    # order as before (the same values to the bit), written into one channels-first array in
    # place (no float copy of the image, no transposed copy): a quarter of a millisecond at 224
    # instead of one to two.
    arr = np.asarray(img).transpose(2, 0, 1)  # uint8 (3, H, W), a view
    out = np.empty(arr.shape, dtype=np.float32)
    np.divide(arr, np.float32(255.0), out=out)
    np.subtract(out, np.asarray(spec.mean, dtype=np.float32)[:, None, None], out=out)
    np.divide(out, np.asarray(spec.std, dtype=np.float32)[:, None, None], out=out)
    return torch.from_numpy(out)


def to_tensor(img: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    """One RGB PIL image -> normalised float32 tensor (3, size, size)."""
    return _normalise(_view(img, spec), spec)


def to_views(img: Image.Image, spec: PreprocessSpec, views: int = 1) -> torch.Tensor:
    """One image -> (views, 3, size, size): the TTA_VIEWS[views] views, view 0 = to_tensor."""
    return torch.stack([_normalise(_view(img, spec, crop, flip), spec)
                        for crop, flip in TTA_VIEWS[check_views(views)]])


def to_batch(images: Sequence[Image.Image], spec: PreprocessSpec, views: int = 1) -> torch.Tensor:
    """(len(images) * views, 3, S, S), image-major: image i's views are rows i*views .. +views-1."""
    return torch.cat([to_views(img, spec, views) for img in images])
