"""Offset bookkeeping (never commit past an unfinished message), perceptual hashing and its
probes, and the digests of bytes and pixels."""
from __future__ import annotations

from PIL import ImageFilter

from worker.hashing import hamming, phash, phash_probes, pixels_sha256, sha256_hex
from worker.offsets import OffsetTracker

from conftest import image_bytes, make_image

TP = ("refs", 0)


def test_commit_stops_at_the_lowest_unfinished_offset():
    t = OffsetTracker()
    for o in range(5):
        t.started(TP, o)
    assert t.committable() == {}  # nothing finished: nothing new to say
    t.finished(TP, 0)
    t.finished(TP, 2)
    t.finished(TP, 3)
    assert t.committable() == {TP: 1}
    t.mark_committed({TP: 1})
    assert t.committable() == {}
    t.finished(TP, 1)
    t.finished(TP, 4)
    assert t.committable() == {TP: 5}
    t.mark_committed({TP: 5})
    assert t.in_flight() == 0


def test_partitions_are_independent_and_forgotten_on_revoke():
    t = OffsetTracker()
    t.started(("refs", 0), 10)
    t.started(("refs", 1), 3)
    t.finished(("refs", 1), 3)
    assert t.committable() == {("refs", 1): 4}  # partition 0 still waits on offset 10
    t.finished(("refs", 0), 10)
    assert t.committable() == {("refs", 0): 11, ("refs", 1): 4}
    t.forget({("refs", 0)})
    assert t.committable() == {("refs", 1): 4}


def scene(seed: int):
    """Shapes on a gradient: the structure a photo has, unlike pure noise."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = make_image(256, 192, seed=seed).filter(ImageFilter.GaussianBlur(3))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, 200), rng.integers(0, 140)
        w, h = rng.integers(20, 80, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x, y, x + w, y + h), fill=colour)
    return img


def test_phash_survives_recompression_and_resizing_but_not_other_images():
    import io

    from PIL import Image

    img = scene(1)
    h = phash(img)
    assert len(h) == 16
    jpeg = Image.open(io.BytesIO(image_bytes(img, "JPEG", quality=60)))
    assert hamming(h, phash(jpeg)) <= 4
    assert hamming(h, phash(img.resize((128, 96)))) <= 4
    other = scene(2)
    assert hamming(h, phash(other)) > 10


def test_probes_cover_the_bits_a_reencode_flips():
    import io

    from PIL import Image

    img = scene(3)
    probes = phash_probes(img)
    assert probes[0] == phash(img) and len(set(probes)) == 16
    assert max(hamming(probes[0], p) for p in probes) == 4
    for quality in (50, 70, 90):
        jpeg = Image.open(io.BytesIO(image_bytes(img, "JPEG", quality=quality)))
        assert phash(img) in phash_probes(jpeg)  # the lookup of a re-encode finds the original


def test_pixel_digest_ignores_the_container_not_the_pixels():
    import io

    from PIL import Image

    img = scene(4)
    png = Image.open(io.BytesIO(image_bytes(img, "PNG"))).convert("RGB")
    assert pixels_sha256(png) == pixels_sha256(img)
    changed = img.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    assert pixels_sha256(changed) != pixels_sha256(img)
    assert pixels_sha256(img.resize((255, 192))) != pixels_sha256(img)


def test_sha256():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
