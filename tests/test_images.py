"""Decoding untrusted bytes: formats, limits, bombs, orientation, animation."""
from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from detector.images import JPEG_DRAFT_SHARE, ImageDecodeError, ImageLimits, decode_image

from conftest import image_bytes, make_image


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    data = bytearray(image_bytes(make_image(4, 4)))
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb(fmt):
    img = decode_image(image_bytes(make_image(33, 21), fmt))
    assert img.mode == "RGB" and img.size == (33, 21)


def test_bomb_is_refused_from_the_header():
    with pytest.raises(ImageDecodeError) as err:
        decode_image(png_with_header_size(100_000, 100_000))
    assert err.value.kind == "too_many_pixels"
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1000"):
        decode_image(image_bytes(make_image(40, 40)), ImageLimits(max_pixels=1000))


def test_garbage_truncated_and_disallowed():
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"%PDF-1.4 definitely not an image")
    assert err.value.kind == "not_an_image"
    jpeg = image_bytes(make_image(64, 64), "JPEG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(jpeg[: len(jpeg) // 2])
    assert err.value.kind == "corrupt_image"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(image_bytes(make_image(), "BMP"), ImageLimits(formats=frozenset({"PNG"})))
    assert err.value.kind == "unsupported_format"


def test_exif_orientation_is_applied():
    img = make_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(image_bytes(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_orientation_gives_exif_transposes_pixels(orientation, fmt):
    """Our transpose (no EXIF rewrite) against Pillow's ImageOps.exif_transpose, to the byte."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = image_bytes(make_image(37, 21), fmt, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as opened:
        expected = ImageOps.exif_transpose(opened).convert("RGB")
    out = decode_image(data)
    assert out.size == expected.size and out.tobytes() == expected.tobytes()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data)
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and b < 50


# --- reduced decoding (min_side) ---------------------------------------------------------------

def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("size", [(1000, 700), (700, 1000), (451, 900), (333, 333), (90, 2000)])
def test_reduced_decode_keeps_the_short_side_asked_for(fmt, size):
    min_side = 100
    img = decode_image(image_bytes(make_image(*size), fmt), min_side=min_side)
    assert img.mode == "RGB"
    # A JPEG's DCT scaling keeps JPEG_DRAFT_SHARE x min_side; a box filter keeps min_side.
    floor = math.ceil(min_side * JPEG_DRAFT_SHARE) if fmt == "JPEG" else min_side
    short, w, h = min(size), *img.size
    assert min(w, h) >= min(floor, short)
    if short >= 2 * floor:  # something to gain: reduced, to less than twice the need
        assert min(w, h) < 2 * min_side
    else:
        assert (w, h) == size
    # The shape survives the reduction: aspect ratio within the rounding of one reduced pixel.
    assert abs(w / h - size[0] / size[1]) <= 1.0 / min(w, h) * max(w / h, 1)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_is_drafted_not_decoded_whole(mode, progressive, monkeypatch):
    """libjpeg's DCT scaling does the reduction (1/2, 1/4, 1/8); Image.reduce only finishes it."""
    data = image_bytes(make_image(1600, 1200, mode=mode), "JPEG", progressive=progressive)
    reduce = Image.Image.reduce
    calls = []
    monkeypatch.setattr(Image.Image, "reduce",
                        lambda self, *a, **k: calls.append(self.size) or reduce(self, *a, **k))
    img = decode_image(data, min_side=200)
    assert img.size == (400, 300) and img.mode == "RGB"  # 1200 // 200 = 6: the 1/4 scale
    assert calls == []  # 300 is less than twice 200: nothing left to reduce after the draft
    assert decode_image(data, min_side=100).size == (200, 150)  # 1/8, the largest DCT scale
    assert decode_image(data, min_side=30).size == (40, 30)  # 1/8, then a box reduce by 150 // 30
    assert calls == [(200, 150)]
    # Another share drafts further (bench/decode_fidelity.py's comparison): 2/3 x 225 = 150.
    assert decode_image(data, min_side=225, jpeg_draft_share=2 / 3).size == (200, 150)
    assert decode_image(data, min_side=225).size == (400, 300)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_orientation_is_applied_after_the_reduction(orientation, fmt):
    """The stored image is wide with a bright block in one corner; every EXIF orientation must
    put the block where a full decode puts it, at the reduced size."""
    stored = Image.new("RGB", (800, 400), (20, 20, 20))
    stored.paste((250, 250, 250), (0, 0, 200, 100))  # top-left quarter of the width
    data = image_bytes(stored, fmt, exif=exif_with(orientation), **(
        {"quality": 95} if fmt == "JPEG" else {}))
    full = decode_image(data)
    reduced = decode_image(data, min_side=50)
    assert min(reduced.size) >= 50 and max(reduced.size) < max(full.size)
    assert (reduced.width > reduced.height) == (full.width > full.height)
    expected = full.resize(reduced.size, Image.Resampling.BOX)
    diff = np.abs(np.asarray(expected, dtype=np.int16) - np.asarray(reduced, dtype=np.int16))
    assert diff.mean() < 3  # edges may differ by a pixel; a wrong turn gives about 29 (1/8 of
    # the pixels off by 230)


def test_bomb_guard_fires_from_the_header_before_any_draft_or_decode(monkeypatch):
    """A draft shrinks `size` before load, so the limit must be judged first, on the header's
    size: a 40x40 JPEG drafted to 10x10 would pass a 1000-pixel limit it does not meet."""
    from PIL import ImageFile, JpegImagePlugin

    def forbidden(*args, **kwargs):
        raise AssertionError("pixels touched before the limit was checked")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", forbidden)
    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(image_bytes(make_image(40, 40), "JPEG"), ImageLimits(max_pixels=1000),
                     min_side=8)
    assert err.value.kind == "too_many_pixels"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(png_with_header_size(100_000, 100_000), min_side=224)
    assert err.value.kind == "too_many_pixels"


def test_animated_gif_and_mpo_give_their_first_frame_reduced():
    frames = [Image.new("RGB", (400, 300), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "MPO"):
        data = image_bytes(frames[0], fmt, save_all=True, append_images=frames[1:])
        out = decode_image(data, min_side=50)
        r, g, b = out.getpixel((out.width // 2, out.height // 2))
        assert min(out.size) >= 50 and out.size != (400, 300), fmt
        assert r > 200 and b < 50, fmt


def test_transparency_is_dropped_as_at_full_size():
    """RGBA is made RGB before the box reduction, as the full-size decode makes it RGB before the
    resize: Image.reduce on RGBA would premultiply alpha and change the colours."""
    rgba = make_image(600, 400, mode="RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((600, 400)))
    data = image_bytes(rgba, "PNG")
    assert decode_image(data, min_side=100).tobytes() == decode_image(data).reduce(4).tobytes()


def test_the_result_holds_no_reference_to_the_encoded_bytes():
    for min_side in (None, 16):
        img = decode_image(image_bytes(make_image(64, 48), "JPEG"), min_side=min_side)
        assert getattr(img, "fp", None) is None and type(img) is Image.Image
