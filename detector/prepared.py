"""Model inputs made ahead of the forward, in two halves: the per-image half (resize, crop, the
test-time views) as compact uint8 tensors, wherever the caller likes (the worker's fetch threads),
and the normalising half, batched and vectorised, just before the forward (on the device).

Both halves are detector.preprocess's pipeline, split where the pixels are still uint8: the same
views (`_view`), then (x / 255 - mean) / std in float32, the same operations in the same order as
preprocess's own normalising, so the scores are those of `to_batch` within float rounding. A uint8
view is a quarter of its float tensor and holds nothing of the full-size image.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from detector.preprocess import TTA_VIEWS, _view, check_views
from detector.spec import PreprocessSpec

# One image's inputs: per distinct PreprocessSpec, its views as uint8 (views, 3, S, S).
Prepared = dict[PreprocessSpec, torch.Tensor]


def uint8_views(image: Image.Image, spec: PreprocessSpec, views: int = 1) -> torch.Tensor:
    """One image -> (views, 3, S, S) uint8: the TTA_VIEWS[views] views, resized and cropped as
    to_views makes them, not yet normalised."""
    # np.array copies: Pillow's array view is read-only, which torch warns about.
    return torch.stack([torch.from_numpy(np.array(_view(image, spec, crop, flip))).permute(2, 0, 1)
                        for crop, flip in TTA_VIEWS[check_views(views)]])


def normalised(pixels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float32 (x / 255 - mean) / std, on the tensor's own device."""
    shape = dict(dtype=torch.float32, device=pixels.device)
    mean = torch.tensor(spec.mean, **shape).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, **shape).view(1, 3, 1, 1)
    return pixels.to(torch.float32).div_(255.0).sub_(mean).div_(std)
