"""Offset bookkeeping (never commit past an unfinished message) and perceptual hashing."""
from __future__ import annotations

from PIL import ImageFilter

from worker.hashing import hamming, phash, sha256_hex
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


def test_sha256():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
