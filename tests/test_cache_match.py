"""When a cached verdict may answer for a new image: exact and near matches, local edits and
crafted pHash collisions refused, and cache values parsed strictly."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from detector.images import decode_image
from worker import cache_match
from worker.cache_match import (
    ENTRY_VERSION, SIGNATURE_BYTES, CacheLookup, CachedVerdict, Signature, decode_entry,
    fingerprint, match,
)
from worker.hashing import phash
from worker.metrics import Metrics

from conftest import image_bytes, make_image

RESULT = {"score": 0.8, "experts": {"a": 0.7, "b": 0.9}, "spread": 0.2}


def photo(seed: int = 1) -> Image.Image:
    """Shapes with soft edges on a textured gradient: structure at several scales, as in a photo."""
    rng = np.random.default_rng(seed)
    img = make_image(320, 240, seed=seed).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y = rng.integers(0, 260), rng.integers(0, 180)
        w, h = rng.integers(30, 100, size=2)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img.filter(ImageFilter.GaussianBlur(1))


def decoded(img: Image.Image, fmt: str = "PNG", **kw) -> tuple[bytes, Image.Image]:
    data = image_bytes(img, fmt, **kw)
    return data, decode_image(data)


def stored_entry(img: Image.Image) -> CachedVerdict:
    data, pixels = decoded(img, "JPEG", quality=92)
    return CacheLookup("t", Metrics()).entry(fingerprint(data, pixels), RESULT)


def reuse(entry: CachedVerdict, img: Image.Image, fmt: str = "JPEG", **kw):
    return match(fingerprint(*decoded(img, fmt, **kw)), entry)


def smooth_refill(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The region replaced by a blend of its border rows and columns (a simple inpainting)."""
    arr = np.asarray(img, dtype=np.float64).copy()
    x0, y0, x1, y1 = box
    t = np.linspace(0, 1, y1 - y0)[:, None, None]
    s = np.linspace(0, 1, x1 - x0)[None, :, None]
    vertical = (1 - t) * arr[y0 - 1, x0:x1][None] + t * arr[y1, x0:x1][None]
    horizontal = (1 - s) * arr[y0:y1, x0 - 1][:, None] + s * arr[y0:y1, x1][:, None]
    arr[y0:y1, x0:x1] = (vertical + horizontal) / 2
    return Image.fromarray(arr.astype(np.uint8))


def test_same_bytes_and_same_pixels_are_exact_hits():
    img = photo()
    data, pixels = decoded(img, "JPEG", quality=92)
    entry = CacheLookup("t", Metrics()).entry(fingerprint(data, pixels), RESULT)
    assert match(fingerprint(data, pixels), entry) == "exact"
    assert match(fingerprint(*decoded(pixels, "PNG")), entry) == "exact"  # other container


@pytest.mark.parametrize("change", ["jpeg_q50", "jpeg_q80", "scale_0.5", "scale_0.75", "scale_2"])
def test_reencodes_and_resizes_are_near_hits(change):
    img = photo()
    entry = stored_entry(img)
    if change.startswith("jpeg"):
        assert reuse(entry, img, quality=int(change[-2:])) == "near"
    else:
        s = float(change.split("_")[1])
        scaled = img.resize((round(320 * s), round(240 * s)), Image.Resampling.LANCZOS)
        assert reuse(entry, scaled, quality=85) == "near"


def test_local_edits_that_keep_the_phash_are_refused():
    img = photo()
    entry = stored_entry(img)
    w, h = img.size
    side_w, side_h = int(w * 0.2), int(h * 0.25)  # 5% of the area
    for x0, y0 in [(40, 40), (150, 100), (200, 30)]:
        box = (x0, y0, x0 + side_w, y0 + side_h)
        edited = smooth_refill(img, box)
        assert np.abs(np.asarray(edited, float) - np.asarray(img, float)).max() > 20  # visible
        assert reuse(entry, edited, quality=92) is None, box
        patch = photo(seed=7).crop(box)
        replaced = img.copy()
        replaced.paste(patch, box[:2])
        assert reuse(entry, replaced, quality=92) is None, box


def recoloured(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The region's two chroma channels swapped: other colours, the same grey."""
    out = img.copy()
    luma, cb, cr = img.crop(box).convert("YCbCr").split()
    out.paste(Image.merge("YCbCr", (luma, cr, cb)).convert("RGB"), box[:2])
    return out


def test_a_colour_only_edit_is_refused(monkeypatch):
    img = photo()
    entry = stored_entry(img)
    box = (200, 30, 264, 90)  # 5% of the area, where swapping chroma clips no channel
    edited = recoloured(img, box)
    seen = fingerprint(*decoded(edited, "JPEG", quality=92)).signature
    stored = Signature.from_bytes(base64.b64decode(entry.signature))
    grey_only = lambda s: Signature(s.means, s.stds, np.zeros_like(s.chroma))  # noqa: E731
    with monkeypatch.context() as patch:  # grey cells alone would reuse it (a grey move under
        patch.setattr(cache_match, "SPREAD_TOL", np.inf)  # a level, left to the spread rule)
        assert grey_only(seen).agrees_with(grey_only(stored))
    assert match(fingerprint(*decoded(edited, "JPEG", quality=92)), entry) is None
    assert reuse(entry, img, quality=50, subsampling=2) == "near"  # 4:2:0 chroma: still a hit


def force_phash(img: Image.Image, target: Image.Image, steps: int = 12) -> Image.Image:
    """An attacker's collision: nudge `img`'s low frequencies until its pHash is `target`'s."""
    n = 32
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    dct = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    dct[0] /= np.sqrt(2.0)

    def low(x):
        g = np.asarray(x.convert("L").resize((n, n), Image.Resampling.BILINEAR), dtype=np.float64)
        return (dct @ g @ dct.T)[:8, :8]

    goal = low(target)
    median = np.median(goal.flatten()[1:])
    goal = median + np.sign(goal - median) * np.maximum(np.abs(goal - median), 12.0)
    arr = np.asarray(img, dtype=np.float64)
    for _ in range(steps):
        current = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if phash(current) == phash(target):
            return current
        delta = np.zeros((n, n))
        delta[:8, :8] = goal - low(current)
        delta[0, 0] = 0.0
        field = Image.fromarray((dct.T @ delta @ dct).astype(np.float32), "F")
        arr = arr + np.asarray(field.resize(current.size, Image.Resampling.BILINEAR))[..., None]
    raise AssertionError("could not force the pHash")


def test_a_crafted_phash_collision_is_refused():
    img = photo(1)
    forged = force_phash(photo(2), img)
    assert phash(forged) == phash(img)
    assert reuse(stored_entry(img), forged, "PNG") is None


def test_signature_is_small_and_round_trips():
    sig = Signature.of(photo())
    raw = sig.to_bytes()
    assert len(raw) == SIGNATURE_BYTES == 768
    again = Signature.from_bytes(raw)
    assert again.agrees_with(again) and sig.agrees_with(again)
    assert np.abs(again.means - sig.means).max() <= 1 / 32 + 1e-9  # sixteenths of a level
    assert np.abs(again.chroma - np.clip(sig.chroma, -28, 28)).max() <= 2 + 1e-9  # steps of 4
    with pytest.raises(ValueError):
        Signature.from_bytes(raw[:-1])
    with pytest.raises(ValueError):  # a chroma nibble of 15 is no code (the last Cr byte)
        Signature.from_bytes(raw[:639] + b"\xff" + raw[640:])
    with pytest.raises(ValueError):  # nor is a grey mean above 255 (255 and 15 sixteenths)
        Signature.from_bytes(b"\xff" + raw[1:640] + bytes([raw[640] | 0xF0]) + raw[641:])


def test_a_cell_that_moved_far_more_than_the_rest_is_refused():
    """The spread rule: a flat cell refilled by a level, within every cell's own tolerance, is an
    edit when the rest of the picture did not move; the whole picture moving by as much (a
    brightness shift) is not."""
    stored = Signature.from_bytes(Signature.of(photo()).to_bytes())
    flat = np.unravel_index(np.argmin(stored.stds), stored.stds.shape)

    def moved(delta: np.ndarray) -> Signature:
        return Signature(stored.means + delta, stored.stds, stored.chroma)

    one_cell = np.zeros_like(stored.means)
    one_cell[flat] = 1.2
    assert not moved(one_cell).agrees_with(stored)
    assert moved(np.full_like(stored.means, 1.2)).agrees_with(stored)
    assert moved(one_cell / 4).agrees_with(stored)  # under SPREAD_FLOOR: storage and JPEG noise


def test_a_grey_picture_has_no_chroma_and_matches_its_rgb_copy():
    grey = photo().convert("L")
    stored = Signature.from_bytes(Signature.of(grey).to_bytes())
    assert not stored.chroma.any()
    assert Signature.of(grey.convert("RGB")).agrees_with(stored)


def test_lookup_probes_16_keys_and_counts_mismatches():
    metrics = Metrics()
    lookup = CacheLookup("scope", metrics)
    data, pixels = decoded(photo(1), "JPEG", quality=90)
    fp = fingerprint(data, pixels)
    keys = lookup.keys(fp)
    assert keys[0] == lookup.key(fp) == f"scope:{fp.phash}" and len(set(keys)) == 16
    other = lookup.entry(fingerprint(*decoded(photo(2))), RESULT)
    assert lookup.find(fp, [other]) is None
    assert metrics.value("featdistill_cache_mismatches_total") == 1
    mine = lookup.entry(fp, RESULT)
    assert lookup.find(fp, [other, mine]) == ("exact", mine)


def valid_value() -> dict:
    data, pixels = decoded(make_image(40, 30))
    entry = CacheLookup("t", Metrics()).entry(fingerprint(data, pixels), RESULT)
    return json.loads(entry.encode())


@pytest.mark.parametrize("raw, reason", [
    (b"\x00\xffnot json", "not_json"),
    (b"[0.1, 0.2]", "not_an_object"),
    (b'"a string"', "not_an_object"),
    (b'{"score": 0.1}', "unversioned"),
    (b'{"score": 0.1, "experts": {"a": 0.1}, "spread": 0.0}', "unversioned"),  # first format
    (b'{"v": 5, "score": 0.1}', "other_version"),  # a newer worker's
])
def test_unusable_values_say_why(raw, reason):
    assert decode_entry(raw) == reason


@pytest.mark.parametrize("field, value", [
    ("score", "0.1"), ("score", 1.5), ("score", None), ("experts", {}), ("experts", {"a": "x"}),
    ("experts", {"a": 2.0}), ("spread", -0.1), ("sha256", "abc"), ("signature", "not base64!"),
    ("signature", base64.b64encode(b"short").decode()), ("extra_field", 1),
])
def test_wrong_types_and_values_are_invalid(field, value):
    value_dict = valid_value()
    value_dict[field] = value
    assert decode_entry(json.dumps(value_dict).encode()) == "invalid"


@pytest.mark.parametrize("version, signature_bytes", [(2, 512), (3, 640)])
def test_an_entry_of_a_previous_version_is_a_counted_miss(version, signature_bytes):
    """Version 2 (grey-only 512-byte signature) and version 3 (whole-level grey means, 640 bytes)
    entries still in Redis after an upgrade."""
    value = valid_value()
    assert value["v"] == ENTRY_VERSION == 4
    old = {**value, "v": version, "signature": base64.b64encode(bytes(signature_bytes)).decode()}
    assert decode_entry(json.dumps(old).encode()) == "other_version"
    metrics = Metrics()
    assert CacheLookup("t", metrics).decode({"k": json.dumps(old).encode()}) == {}
    assert metrics.value("featdistill_cache_invalid_total", reason="other_version") == 1


def test_a_valid_value_round_trips():
    value = valid_value()
    entry = decode_entry(json.dumps(value).encode())
    assert isinstance(entry, CachedVerdict) and entry.result() == RESULT


def test_decode_counts_invalid_values_by_reason():
    metrics = Metrics()
    good = json.dumps(valid_value()).encode()
    out = CacheLookup("t", metrics).decode({"a": b"garbage", "b": b'{"score": 0.1}', "c": good})
    assert list(out) == ["c"]
    assert metrics.value("featdistill_cache_invalid_total", reason="not_json") == 1
    assert metrics.value("featdistill_cache_invalid_total", reason="unversioned") == 1


def test_fingerprint_of_a_decoded_upload():
    img = photo()
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    fp = fingerprint(buf.getvalue(), decode_image(buf.getvalue()))
    assert fp.phash == phash(decode_image(buf.getvalue())) and len(fp.probes) == 16
