"""Many distinct phone-size pictures from a few photos, for benchmarks whose cache must miss.

The worker's cache answers for the same picture: the same bytes or pixels, or a re-encode or a
resize of it (worker.cache_match). References that repeat 24 photos would mostly be cache hits or
in-flight duplicates, and the cold figure would not be one. Each variant here is a photo with a
local edit the cache refuses by design (a changed region shows in its signature's cells): a block
a quarter of the width by a quarter of the height (1/16 of the area) replaced by another part of
the same photo, turned and inverted, at a place of its own, the whole picture mirrored for every
other variant. The block keeps the photo's texture, and the variant is saved with the photo's own
quantisation tables, chroma subsampling and EXIF (orientation and maker note included), so that
its file size, and so its decode, cost what the photo's do. Variant 0 is the photo's own bytes.

The photo set itself is bench/photos.py's phone mix (1.2-14.7 MP, mean 6.7 MP), made from the
dev set's real photos as bench/preinference.py makes it; `write_photo_set` copies such a set into
a folder that can be carried to a machine without the dev set.
"""
from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import get_sampling

JPEG_SUFFIXES = (".jpg", ".jpeg")
_VARIANTS_PER_TASK = 8  # one decode of the photo serves this many variants


def photos_in(folder: Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in JPEG_SUFFIXES)
    if not paths:
        raise SystemExit(f"no JPEG photos in {folder}")
    return paths


def phone_mix_photos(count: int) -> list[Path]:
    """`count` photos of the phone mix, made once under the bench cache from the dev set."""
    from bench.photos import cached_phone_mix
    from bench.preinference import source_photos

    return cached_phone_mix(source_photos(count), tag="gpu-pipeline")


def write_photo_set(folder: Path, count: int) -> list[Path]:
    """Copy `count` phone-mix photos into `folder` (to carry them where the dev set is not)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in phone_mix_photos(count):
        target = folder / path.name
        shutil.copyfile(path, target)
        out.append(target)
    return out


def edited(photo: Image.Image, variant: int, seed: int) -> Image.Image:
    """The photo with variant `variant`'s local edit (see the module's docstring)."""
    rng = np.random.default_rng([seed, variant])
    w, h = photo.size
    pw, ph = max(1, w // 4), max(1, h // 4)
    sx, sy = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    dx, dy = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    block = ImageOps.invert(photo.crop((sx, sy, sx + pw, sy + ph)).rotate(180))
    out = photo.copy()
    out.paste(block, (dx, dy))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if variant % 2 else out


def _write_variants(task: tuple[Path, int, list[tuple[int, Path]]]) -> None:
    """Decode the photo once, write each asked variant (runs in a pool process)."""
    source, seed, jobs = task
    with Image.open(source) as photo:
        photo.load()
        options = {"qtables": photo.quantization, "exif": photo.info.get("exif", b"")}
        sampling = get_sampling(photo)
        options["subsampling"] = sampling if sampling >= 0 else "4:2:0"
        pixels = photo.convert("RGB")
    for variant, target in jobs:
        edited(pixels, variant, seed).save(target, "JPEG", **options)


def make_references(photos: list[Path], count: int, folder: Path, workers: int) -> list[Path]:
    """`count` files, reference k being variant k // len(photos) of photo k % len(photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, per_photo = [], {i: [] for i in range(len(photos))}
    for k in range(count):
        i, variant = k % len(photos), k // len(photos)
        target = folder / f"{k:05d}-v{variant}-{photos[i].stem[:40]}.jpg"
        out.append(target)
        if variant == 0:
            shutil.copyfile(photos[i], target)
        else:
            per_photo[i].append((variant, target))
    tasks = [(photos[i], i, jobs[s : s + _VARIANTS_PER_TASK])
             for i, jobs in per_photo.items() for s in range(0, len(jobs), _VARIANTS_PER_TASK)]
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            _write_variants(task)
    else:
        # fork: the pool starts before any CUDA context exists, and a spawned child would import
        # torch again (seconds each) for work that needs only Pillow.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            list(pool.map(_write_variants, tasks))
    return out
