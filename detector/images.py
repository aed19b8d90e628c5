"""Turning untrusted bytes into an RGB image, safely.

The pixel limit is checked from the header, before any pixel is decoded, so a decompression bomb
(a small file that expands to gigapixels) is refused at the cost of reading its header. EXIF
orientation is applied and animations give their first frame.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000  # width x height; a 40 MP RGB image is 120 MB decoded
    formats: frozenset[str] = DEFAULT_FORMATS


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept. `kind` is a stable, metric-friendly reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Bytes -> RGB PIL image with EXIF orientation applied, or ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            # PIL warns (and past 2x its own limit raises) on huge images; our own limit, checked
            # below from the header, is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"image refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", "bytes are not a recognised image format") from exc
    except (OSError, ValueError) as exc:
        raise ImageDecodeError("not_an_image", f"bytes are not a readable image ({exc})") from exc
    if img.format not in limits.formats:
        raise ImageDecodeError(
            "unsupported_format", f"format {img.format} is not allowed ({sorted(limits.formats)})"
        )
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}",
        )
    try:
        img.seek(0)  # first frame of an animation
        img.load()
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"image refused: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError("corrupt_image", f"image data is corrupt or truncated ({exc})") from exc


def load_image_file(path: str | Path, limits: ImageLimits = ImageLimits()) -> Image.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror or exc}") from exc
    return decode_image(data, limits)
