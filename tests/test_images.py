"""Decoding untrusted bytes: formats, limits, bombs, orientation, animation."""
from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from detector.images import ImageDecodeError, ImageLimits, decode_image

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


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data)
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and b < 50
