"""Phone-like JPEGs made from the dev set's photos, for the decode benchmarks.

The dev set's photos are small (ImageNet, about 0.2 MP); camera uploads are 12 MP JPEGs. A source
image is scaled to the asked pixel count (aspect kept), given the texture a phone's pipeline leaves
(sensor noise at full resolution, then sharpening) so the file has a phone file's entropy (a few MB
for 12 MP: the entropy decoding a draft decode cannot skip scales with it), and saved at quality
92, 4:2:0, with camera EXIF (or as PNG, to exercise the other decode path). Portrait shots are
stored as phones store them: landscape pixels plus an EXIF orientation that turns them on display.

The phone mix (`cached_phone_mix`) is a set like the one the CPU-budget issue measured (12 everyday
phone and camera photos, 1.2-14.7 MP, mean 6.7 MP): sizes spread over that range, JPEG quality
85-92 and sensor noise by ISO, 4:2:0, each with a camera's EXIF (sizes, exposure, GPS, a maker
note of a phone's size).

The files are written under a cache folder (never into the repository) and reused by name.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

CACHE = Path(os.environ.get("FEATDISTILL_CACHE", Path.home() / ".cache" / "featdistill"))
CACHE = CACHE / "bench-photos"
# EXIF orientations in a phone's mix: mostly upright, portrait (6) common, the rest rare.
ORIENTATIONS = (1, 6, 1, 8, 1, 3, 6, 1)
_TURN = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
         8: Image.Transpose.ROTATE_270}  # the inverse of what each orientation asks on display


# (megapixels, JPEG quality, sensor noise) of the phone mix: 1.2-14.7 MP, mean 6.7 MP as in the
# issue's set; quality and noise as phones and cameras vary them (noise grows with the ISO).
PHONE_MIX = ((1.2, 90, 2.0), (2.0, 85, 3.0), (3.1, 92, 2.0), (4.0, 88, 4.0), (5.0, 90, 3.0),
             (6.0, 85, 2.0), (7.0, 92, 3.0), (8.0, 88, 2.0), (8.3, 90, 4.0), (9.1, 85, 3.0),
             (12.0, 92, 3.0), (14.7, 88, 2.0))


def camera_exif(orientation: int, seed: int, size: tuple[int, int] | None = None,
                maker_note: int = 0) -> bytes:
    """EXIF as a camera writes it; with `size`, the pixel dimensions, GPS and a maker note of
    `maker_note` bytes too (phones write 10-40 kB of EXIF that every decode parses)."""
    exif = Image.Exif()
    exif[0x010F] = "FeatDistillCam"  # Make
    exif[0x0110] = "Bench Phone 12"  # Model
    exif[0x0112] = orientation
    exif[0x0131] = "bench/photos.py"  # Software
    exif[0x0132] = f"2025:06:{1 + seed % 28:02d} 12:00:00"  # DateTime
    ifd = exif.get_ifd(0x8769)  # Exif sub-IFD: exposure settings as a phone writes them
    ifd[0x829A] = 1 / 120  # ExposureTime
    ifd[0x829D] = 1.8  # FNumber
    ifd[0x8827] = 50 + 25 * (seed % 8)  # ISOSpeedRatings
    ifd[0x920A] = 4.2  # FocalLength
    if size:
        ifd[0xA002], ifd[0xA003] = size  # PixelXDimension, PixelYDimension
        ifd[0x9003] = exif[0x0132]  # DateTimeOriginal
        ifd[0xA405] = 26  # FocalLengthIn35mmFilm
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = "N", (48.0, 51.0, 24.0)  # GPSLatitudeRef, GPSLatitude
        gps[3], gps[4] = "E", (2.0, 21.0, 7.0)  # GPSLongitudeRef, GPSLongitude
    if maker_note:
        ifd[0x927C] = np.random.default_rng(seed).bytes(maker_note)  # MakerNote: opaque
    return exif.tobytes()


def phone_pixels(source: Image.Image, megapixels: float, orientation: int = 1, seed: int = 0,
                 noise: float = 3.0) -> Image.Image:
    """`source` at about `megapixels` MP as displayed, with a phone's texture, stored turned as
    `orientation` says (the EXIF that turns it back is the encoder's business)."""
    src = source.convert("RGB")
    scale = (megapixels * 1e6 / (src.width * src.height)) ** 0.5
    size = (max(1, round(src.width * scale)), max(1, round(src.height * scale)))
    img = src.resize(size, Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    # Sensor noise, triangular (the sum of two uniform integers in [-h, h], cheaper than a
    # Gaussian at 12 MP), of standard deviation about `noise` grey levels: 2.8 for 3.
    half = round(((6 * noise**2 + 1) ** 0.5 - 1) / 2)
    if half:
        arr = np.asarray(img, dtype=np.int16)
        arr = arr + rng.integers(-half, half + 1, arr.shape, dtype=np.int8)
        arr += rng.integers(-half, half + 1, arr.shape, dtype=np.int8)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    img = img.filter(ImageFilter.UnsharpMask(radius=1.5, percent=60, threshold=2))
    turn = _TURN[orientation]
    # Stored pixels are the sensor's; the EXIF orientation turns them back on display.
    return img if turn is None else img.transpose(turn)


def phone_file(source: Image.Image, megapixels: float, orientation: int = 1, seed: int = 0,
               fmt: str = "JPEG", noise: float = 3.0, quality: int = 92,
               maker_note: int = 0) -> bytes:
    """A phone-like file: JPEG (quality 92 unless told), 4:2:0 (or a fast PNG), camera EXIF."""
    img = phone_pixels(source, megapixels, orientation, seed, noise)
    buf = io.BytesIO()
    exif = camera_exif(orientation, seed, img.size if maker_note else None, maker_note)
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality, subsampling="4:2:0", exif=exif)
    else:
        img.save(buf, fmt, exif=exif, compress_level=1)
    return buf.getvalue()


def cached_phone_files(sources: list[Path], megapixels: float, fmt: str = "JPEG",
                       tag: str = "photos") -> list[Path]:
    """One phone-like file per source path (orientations cycled), made once under CACHE."""
    folder = CACHE / f"{tag}-{megapixels:g}mp-{fmt.lower()}"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    out = []
    for i, src in enumerate(sources):
        orientation = ORIENTATIONS[i % len(ORIENTATIONS)]
        key = hashlib.sha256(f"{src}|{megapixels}|{orientation}|{i}".encode()).hexdigest()[:10]
        path = folder / f"{i:04d}-{Path(src).stem[:40]}-o{orientation}-{key}{suffix}"
        if not path.exists():
            with Image.open(src) as img:
                data = phone_file(img, megapixels, orientation, seed=i, fmt=fmt)
            _write_atomic(path, data)
        out.append(path)
    return out


def cached_phone_mix(sources: list[Path], tag: str = "photos") -> list[Path]:
    """The phone mix (PHONE_MIX, cycled if there are more sources), one JPEG per source, made
    once under CACHE."""
    folder = CACHE / f"{tag}-phone-mix"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sources):
        megapixels, quality, noise = PHONE_MIX[i % len(PHONE_MIX)]
        orientation = ORIENTATIONS[i % len(ORIENTATIONS)]
        key = hashlib.sha256(f"{src}|{megapixels}|{quality}|{noise}|{orientation}|{i}".encode())
        path = folder / f"{i:04d}-{megapixels:g}mp-q{quality}-o{orientation}-{key.hexdigest()[:10]}.jpg"
        if not path.exists():
            with Image.open(src) as img:
                data = phone_file(img, megapixels, orientation, seed=i, noise=noise,
                                  quality=quality, maker_note=16_000 + 1_000 * (i % 8))
            _write_atomic(path, data)
        out.append(path)
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
