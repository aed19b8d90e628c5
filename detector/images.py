"""Turning untrusted bytes into an RGB image, safely.

The pixel limit is checked from the header, before any pixel is decoded, so a decompression bomb
(a small file that expands to gigapixels) is refused at the cost of reading its header. EXIF
orientation is applied and animations give their first frame.

`min_side` asks for no more pixels than the model needs: the image comes back with its short side
at least `min_side` (or whole, when it is smaller than that) instead of at full resolution. JPEGs
are decoded straight to 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling (Image.draft), which saves
most of the inverse DCT, upsampling and colour conversion (not the entropy decoding of the whole
file: that stays, and is most of what a reduced decode costs); other formats are decoded whole,
then reduced by an integer box filter (Image.reduce). Either way the result keeps at least
`min_side` (a JPEG JPEG_DRAFT_SHARE x `min_side`, the same by default), so a later antialiased
resize to the model's input still has the final say on the pixels (see
detector.preprocess.decode_side).

HEIF/HEIC (phones) and AVIF (the web) have no reduced decode: they are decoded whole, then reduced
like the others, after the same size check (their size is read from the container's boxes, not
from decoded pixels). Pillow reads AVIF itself (its wheels carry libavif); HEIF comes from
pi-heif's plugin. Their orientation lives in irot/imir boxes, not only in EXIF, and is applied
once: libheif applies it while decoding and pi-heif resets the EXIF tag to 1, while Pillow's AVIF
plugin turns it into the EXIF tag that exif_transpose applies.

Only the allowed formats' parsers ever read the bytes: a format left out of `ImageLimits.formats`
is never parsed, only recognised by its signature to name it in the refusal.
"""
from __future__ import annotations

import functools
import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

# The formats decode_image is written and tested for (Pillow's names; MPO is the multi-picture
# JPEG some cameras write): size checked from the header, orientation applied once, first frame.
SUPPORTED_FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF"}
)
DEFAULT_FORMATS = SUPPORTED_FORMATS
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
     ".heic", ".heif", ".hif", ".avif"}
)
# A JPEG is drafted to this share of min_side. Going further than the box filter was tried and
# refused: at 2/3 (1x the model's input at the worker's margin of 1.5) a phone mix costs a third
# less before inference (bench/preinference.py), but the starter's scores move three times as
# much as at 1 on 4.4 MP JPEGs, whose 1/8 draft then lands just above the input side: mean
# |score change| 0.024 against 0.008, AUC -0.0047 against -0.0003, 5 of 137 labels flipped
# against 1 (bench/decode_fidelity.py, set phone-jpeg-4mp). At 12 MP both stop at 1/8 and agree.
JPEG_DRAFT_SHARE = 1.0
# Their plugins wrap C libraries (libheif, libavif) that report their own refusals (security
# limits, codec errors) as RuntimeError: for these formats it is a property of the bytes.
_LIBRARY_FORMATS = frozenset({"HEIF", "AVIF"})


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000  # width x height; a 40 MP RGB image is 120 MB decoded
    formats: frozenset[str] = DEFAULT_FORMATS  # allowed, a subset of SUPPORTED_FORMATS

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", frozenset(self.formats))  # a list or set is welcome
        unknown = self.formats - SUPPORTED_FORMATS
        if unknown:
            raise ValueError(f"unknown image formats {sorted(unknown)}: "
                             f"choose from {sorted(SUPPORTED_FORMATS)}")


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept. `kind` is a stable, metric-friendly reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(),
                 min_side: int | None = None,
                 jpeg_draft_share: float = JPEG_DRAFT_SHARE) -> Image.Image:
    """Bytes -> RGB PIL image with EXIF orientation applied, or ImageDecodeError.

    With `min_side`, the image is reduced while decoding, keeping its short side >= min_side (a
    JPEG's DCT scaling >= jpeg_draft_share x min_side: other shares are for benchmarks)."""
    img = _open_checked(data, limits)
    try:
        if img.format != "HEIF":  # a HEIF file opens at its primary image, not always the first
            img.seek(0)  # first frame of an animation
        if min_side:
            # Only JPEG acts on a draft (other formats ignore it). The size asked for is square:
            # libjpeg then keeps short side / scale >= draft side whatever the orientation.
            draft_side = math.ceil(min_side * jpeg_draft_share)
            img.draft("RGB", (draft_side, draft_side))
        img.load()
        # After the draft: orientation is a transpose, the same on the reduced pixels.
        out = _oriented(img)
        out = out.convert("RGB") if out.mode != "RGB" else out
        out = _reduce(out, min_side) if min_side else out
        # A detached image: the opened one holds the file's bytes for as long as it lives. Each
        # step above that changed the pixels made a new image; only an image none changed is
        # copied, so there is one copy at most.
        return out.copy() if out is img else out
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"image refused: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError("corrupt_image", f"image data is corrupt or truncated ({exc})") from exc
    except RuntimeError as exc:
        if img.format not in _LIBRARY_FORMATS:
            raise
        raise ImageDecodeError("corrupt_image", f"{img.format} decoder refused the image ({exc})") from exc


def _open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """The image's header, opened lazily: no pixel decoded yet, format and size checked."""
    _register_heif_opener()
    try:
        with warnings.catch_warnings():
            # PIL warns (and past 2x its own limit raises) on huge images; our own limit, checked
            # below from the header, is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_openers(limits.formats))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"image refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _refusal_of_unidentified(data, limits) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise ImageDecodeError("not_an_image", f"bytes are not a readable image ({exc})") from exc
    if img.format not in limits.formats:  # the JPEG opener gives MPO files as MPO
        raise _format_not_allowed(img.format, limits)
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}",
        )
    return img


@functools.cache
def _register_heif_opener() -> None:
    """pi-heif's HEIF plugin, registered with Pillow on first use rather than at import (importing
    detector changes no global state). Thumbnails, depth and auxiliary images are never used, so
    they are not read. Registering twice (two threads' first decodes) is harmless."""
    import pi_heif

    pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _openers(formats: frozenset[str]) -> list[str]:
    """Pillow's openers of the allowed formats: MPO files come from the JPEG opener."""
    return sorted(formats - {"MPO"} | ({"JPEG"} if "MPO" in formats else set()))


def _refusal_of_unidentified(data: bytes, limits: ImageLimits) -> ImageDecodeError:
    """No allowed parser took the bytes: name their format when only disallowed formats' signatures
    match (only the signature test runs, never their parsers); bytes an allowed format's signature
    also matches are a broken file of that format, and bytes no signature matches no image."""
    Image.init()
    prefix = data[:16]
    matching = [fmt for fmt in Image.ID if _signature_matches(fmt, prefix)]
    if matching and not limits.formats.intersection(matching):
        return _format_not_allowed(matching[0], limits)
    return ImageDecodeError("not_an_image", "bytes are not a recognised image format")


def _signature_matches(fmt: str, prefix: bytes) -> bool:
    accept = Image.OPEN[fmt][1]
    try:
        return accept is not None and bool(accept(prefix))
    except (IndexError, TypeError, struct.error):
        return False  # too short for that signature: Pillow skips it the same way


def _format_not_allowed(fmt: str, limits: ImageLimits) -> ImageDecodeError:
    return ImageDecodeError(
        "unsupported_format", f"format {fmt} is not allowed ({', '.join(sorted(limits.formats))})"
    )


# EXIF orientation -> the transpose that shows the picture upright (ImageOps.exif_transpose's).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _oriented(img: Image.Image) -> Image.Image:
    """The image upright: the same pixels as ImageOps.exif_transpose, without its metadata work.
    exif_transpose also deletes the tag and re-serialises the EXIF (and edits the XMP) so that
    the result can be saved; we keep only the pixels, and that rewrite cost 1.5-5 ms per rotated
    phone photo, five to ten times the transpose itself (bench/photos.py's phone mix)."""
    method = _ORIENTATION_TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    return img.transpose(method) if method is not None else img


def _reduce(img: Image.Image, min_side: int) -> Image.Image:
    """Box-filter by the largest integer factor that keeps the short side >= min_side: what the
    JPEG draft does in the DCT, for every format (and for a JPEG still 2x too big after the
    draft's largest scale, 1/8). After the RGB conversion, so alpha is dropped exactly as it is at
    full size (reduce would otherwise premultiply it)."""
    factor = min(img.size) // min_side
    return img.reduce(factor) if factor >= 2 else img


def load_image_file(path: str | Path, limits: ImageLimits = ImageLimits(),
                    min_side: int | None = None,
                    jpeg_draft_share: float = JPEG_DRAFT_SHARE) -> Image.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror or exc}") from exc
    return decode_image(data, limits, min_side, jpeg_draft_share)
