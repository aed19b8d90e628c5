"""The variants bench/cache_reuse.py asks the verdict cache about: each is (name, group, bytes)
made from one photo's bytes, plus the edited region for local edits.

Groups: `same` (the same pixels: the verdict must be an exact hit), `reencode` (the same picture
re-encoded or rescaled: should hit), `edit` (a region replaced, refilled, blurred or copied:
must not hit), `colour` (a region's colours changed, its grey kept: chroma swapped, or another
photo's chroma, as a colour-changing inpainting would: must not hit), `collision` (another
content crafted to keep the original's pHash: must not hit), and `noise` (pixel noise added, the
pHash forced back), reported without a target: it is finer than the signature's cells (see
worker/cache_match.py).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from detector.images import decode_image

JPEG_QUALITIES = (50, 60, 70, 80, 95)
SCALES = (0.5, 0.75, 1.25, 1.5, 2.0)
EDIT_KINDS = ("replace", "refill", "blur", "copymove")
EDIT_AREAS = (0.02, 0.05, 0.10)


@dataclass
class Variant:
    name: str  # e.g. "jpeg_q50", "refill_5%"
    group: str  # same | reencode | edit | collision
    data: bytes
    region: tuple[int, int, int, int] | None = None  # x, y, w, h of a local edit


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# -- same pixels ---------------------------------------------------------------------------------
def with_exif(jpeg: bytes, description: str) -> bytes:
    """The same JPEG stream with its Exif segment replaced (no re-encoding: same pixels)."""
    exif = Image.Exif()
    exif[0x010E] = description  # ImageDescription
    exif[0x0131] = "featdistill-bench"  # Software
    exif[0x0132] = "2026:01:02 03:04:05"  # DateTime
    payload = exif.tobytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + _without_exif(jpeg[2:])


def _without_exif(body: bytes) -> bytes:
    """Drop APP1 Exif segments before the scan; leave every other segment alone."""
    out, i = bytearray(), 0
    while i + 4 <= len(body) and body[i] == 0xFF and body[i + 1] not in (0xDA, 0xD9):
        length = int.from_bytes(body[i + 2:i + 4], "big")
        segment = body[i:i + 2 + length]
        if not (body[i + 1] == 0xE1 and segment[4:10] == b"Exif\x00\x00"):
            out += segment
        i += 2 + length
    return bytes(out + body[i:])


def rotated_with_orientation(img: Image.Image) -> bytes:
    """Pixels stored rotated, with the EXIF orientation that turns them back (a phone's way)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    return encode(img.rotate(90, expand=True), "PNG", exif=exif)


def same_picture(original: bytes, img: Image.Image) -> list[Variant]:
    return [
        Variant("same_bytes", "same", original),
        Variant("png_lossless", "same", encode(img, "PNG")),
        Variant("exif_edited", "same", with_exif(original, "re-posted with new metadata")),
        Variant("exif_orientation", "same", rotated_with_orientation(img)),
    ]


# -- re-encodes ----------------------------------------------------------------------------------
def reencodes(img: Image.Image, rng: np.random.Generator) -> list[Variant]:
    out = [Variant(f"jpeg_q{q}", "reencode", encode(img, quality=q)) for q in JPEG_QUALITIES]
    w, h = img.size
    for s in SCALES:
        scaled = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
        q = int(rng.integers(50, 96))
        out.append(Variant(f"scale_{s}x", "reencode", encode(scaled, quality=q)))
    return out


# -- local edits ---------------------------------------------------------------------------------
def random_region(w: int, h: int, area: float, rng: np.random.Generator):
    """A rectangle of `area` of the picture, aspect 1:2 to 2:1, anywhere."""
    aspect = rng.uniform(0.5, 2.0)
    rw = min(w, max(1, round(np.sqrt(area * w * h * aspect))))
    rh = min(h, max(1, round(area * w * h / rw)))
    return int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1)), rw, rh


def _border_fill(arr: np.ndarray, x: int, y: int, rw: int, rh: int) -> np.ndarray:
    """Smooth refill (what a simple inpainting does): each pixel blends the region's four borders
    (bilinear Coons patch)."""
    a = arr.astype(np.float64)
    top, bottom = a[max(y - 1, 0), x:x + rw], a[min(y + rh, a.shape[0] - 1), x:x + rw]
    left, right = a[y:y + rh, max(x - 1, 0)], a[y:y + rh, min(x + rw, a.shape[1] - 1)]
    t = ((np.arange(rh) + 1) / (rh + 1))[:, None, None]
    s = ((np.arange(rw) + 1) / (rw + 1))[None, :, None]
    vertical = (1 - t) * top[None] + t * bottom[None]
    horizontal = (1 - s) * left[:, None] + s * right[:, None]
    return np.clip((vertical + horizontal) / 2, 0, 255).astype(np.uint8)


def local_edit(img: Image.Image, other: Image.Image, kind: str, area: float,
               rng: np.random.Generator) -> Variant:
    arr = np.asarray(img).copy()
    h, w = arr.shape[:2]
    x, y, rw, rh = random_region(w, h, area, rng)
    if kind == "replace":  # a patch of another photo
        arr[y:y + rh, x:x + rw] = np.asarray(other.resize((rw, rh)))
    elif kind == "refill":
        arr[y:y + rh, x:x + rw] = _border_fill(arr, x, y, rw, rh)
    elif kind == "blur":  # an object smudged away
        patch = Image.fromarray(arr[y:y + rh, x:x + rw])
        arr[y:y + rh, x:x + rw] = np.asarray(patch.filter(ImageFilter.GaussianBlur(max(rw, rh) / 4)))
    elif kind == "copymove":  # another part of the same picture pasted over it
        sx, sy = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
        arr[y:y + rh, x:x + rw] = arr[sy:sy + rh, sx:sx + rw].copy()
    else:
        raise ValueError(kind)
    data = encode(Image.fromarray(arr), quality=90)
    return Variant(f"{kind}_{round(area * 100)}%", "edit", data, (x, y, rw, rh))


def local_edits(img: Image.Image, other: Image.Image, rng: np.random.Generator) -> list[Variant]:
    return [local_edit(img, other, k, a, rng) for k in EDIT_KINDS for a in EDIT_AREAS]


COLOUR_KINDS = ("recolour", "colourise")


def colour_edit(img: Image.Image, other: Image.Image, kind: str, area: float,
                rng: np.random.Generator) -> Variant:
    """A region's colours changed, its grey (luma) kept: `recolour` swaps its two chroma
    channels, `colourise` gives it another photo's chroma (a colour-changing inpainting)."""
    arr = np.asarray(img).copy()
    x, y, rw, rh = random_region(img.width, img.height, area, rng)
    luma, cb, cr = Image.fromarray(arr[y:y + rh, x:x + rw]).convert("YCbCr").split()
    if kind == "recolour":
        cb, cr = cr, cb
    elif kind == "colourise":
        _, cb, cr = other.resize((rw, rh)).convert("YCbCr").split()
    else:
        raise ValueError(kind)
    arr[y:y + rh, x:x + rw] = np.asarray(Image.merge("YCbCr", (luma, cb, cr)).convert("RGB"))
    data = encode(Image.fromarray(arr), quality=90)
    return Variant(f"{kind}_{round(area * 100)}%", "colour", data, (x, y, rw, rh))


def colour_edits(img: Image.Image, other: Image.Image, rng: np.random.Generator) -> list[Variant]:
    return [colour_edit(img, other, k, a, rng) for k in COLOUR_KINDS for a in EDIT_AREAS]


def region_change(original: Image.Image, variant: bytes, region, channels: str = "L") -> float:
    """Mean absolute difference inside the edited region: of grey ("L"), or of the chroma
    channels ("CbCr", mean of the two)."""
    x, y, rw, rh = region
    mode, keep = ("L", slice(None)) if channels == "L" else ("YCbCr", slice(1, 3))
    a = np.asarray(original.convert(mode), dtype=np.float64)[y:y + rh, x:x + rw]
    b = np.asarray(decode_image(variant).convert(mode), dtype=np.float64)[y:y + rh, x:x + rw]
    if channels != "L":
        a, b = a[..., keep], b[..., keep]
    return float(np.abs(a - b).mean())


# -- crafted pHash collisions --------------------------------------------------------------------
def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(32)


def _low_coefficients(img: Image.Image) -> np.ndarray:
    """pHash's input: the DCT of a 32x32 grey thumbnail (an attacker knows the algorithm)."""
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    return _DCT @ grey @ _DCT.T


def force_phash(img: Image.Image, target: Image.Image, phash, steps: int = 10,
                margin: float = 12.0) -> Image.Image | None:
    """`img` nudged by a smooth correction until its pHash equals `target`'s: its 8x8 lowest
    DCT coefficients are moved to the target's, pushed `margin` away from the median."""
    want = phash(target)
    goal = _low_coefficients(target)[:8, :8]
    median = np.median(goal.flatten()[1:])
    goal = median + np.sign(goal - median) * np.maximum(np.abs(goal - median), margin)
    arr = np.asarray(img, dtype=np.float64).copy()
    for _ in range(steps):
        current = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if phash(current) == want:
            return current
        delta = np.zeros((32, 32))
        delta[:8, :8] = goal - _low_coefficients(current)[:8, :8]
        delta[0, 0] = 0.0  # leave the mean brightness alone
        field = (_DCT.T @ delta @ _DCT).astype(np.float32)
        arr += np.asarray(Image.fromarray(field, "F").resize(current.size, Image.Resampling.BILINEAR))[..., None]
    current = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return current if phash(current) == want else None


def collisions(img: Image.Image, other: Image.Image, rng: np.random.Generator,
               phash) -> tuple[list[Variant], int]:
    """Pictures that differ from `img` but are forced onto its pHash (saved losslessly, as an
    attacker would). Returns the variants and how many constructions failed."""
    radius = max(img.size) / 32
    low = np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)
    o = other.resize(img.size)
    high = np.asarray(o, dtype=np.float64) - np.asarray(o.filter(ImageFilter.GaussianBlur(radius)))
    noise = rng.normal(0, 12, (img.size[1], img.size[0], 1))
    edited = decode_image(local_edit(img, other, "replace", 0.05, rng).data)
    made = {
        "another_photo": o,  # another picture entirely, with img's pHash
        "layout_plus_detail": Image.fromarray(np.clip(low + high, 0, 255).astype(np.uint8)),
        "edit_5%_rehashed": edited,  # a local edit, its pHash forced back
        "fine_noise": Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8)),
    }
    out, failed = [], 0
    for name, start in made.items():
        forced = force_phash(start, img, phash)
        group = "noise" if name == "fine_noise" else "collision"
        if forced is None:
            failed += 1
        else:
            out.append(Variant(f"collide_{name}", group, encode(forced, "PNG")))
    return out, failed
