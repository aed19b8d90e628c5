"""Metadata stripping for imported training images: the model must see pixels only.

AI images often carry their provenance outside the pixels (ComfyUI/A1111 workflows and prompts in
PNG text chunks, C2PA manifests in JPEG APP11 / PNG caBX chunks, "Software: ..." EXIF tags), and
camera photos carry EXIF (make, model, GPS), ICC profiles, maker notes and appended extra images
(MPF, motion-photo video after the end of the JPEG). A detector trained on files can learn any of
these; one trained on decoded pixels cannot, but a file left with them is one `exiftool` away from a
shortcut, and the training copies are what others will reuse. So every training copy is rewritten:

- JPEG: rewritten **losslessly**: only the segments needed to decode are kept (SOI, DQT, DHT, SOF*,
  DRI, SOS with its entropy-coded data, EOI, and APP14 "Adobe", which tells the decoder the colour
  transform); every APPn (JFIF, EXIF, XMP, ICC, MPF, IPTC, C2PA/JUMBF, maker data), every COM and
  anything after the first EOI are dropped. The quantised DCT data is untouched, so decoded pixels
  are identical (checked on every image: a mismatch falls back to re-encoding).
- WebP: the RIFF chunks EXIF, XMP and ICCP are dropped and the VP8X flags cleared, bitstream kept.
- PNG and everything else: decoded and written again as PNG from the pixels alone (lossless).
- An EXIF orientation other than 1 is applied to the pixels first (so the image is upright as a
  viewer shows it); such JPEGs are re-encoded with their own quantisation tables and subsampling.
"""
from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

# JPEG markers that carry no pixel data: APP0..APP15 (0xE0-0xEF) and COM (0xFE), except APP14
# "Adobe" (0xEE), which selects the colour transform and so changes decoded pixels.
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))  # TEM, RST0-7: no length field


class StripError(ValueError):
    """A file whose structure we cannot rewrite losslessly (the caller re-encodes it)."""


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG with every metadata segment and all trailing data removed; pixel data kept."""
    if data[:2] != b"\xff\xd8":
        raise StripError("not a JPEG")
    out = bytearray(b"\xff\xd8")
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise StripError(f"no marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise StripError("truncated")
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI: the primary image ends; MPF / motion-photo data after it goes
            out += b"\xff\xd9"
            return bytes(out)
        if marker in _STANDALONE:
            out += bytes((0xFF, marker))
            continue
        if i + 2 > n:
            raise StripError("truncated segment")
        length = struct.unpack(">H", data[i:i + 2])[0]
        seg = data[i - 2:i + length]
        if len(seg) != length + 2:
            raise StripError("truncated segment")
        i += length
        keep = not (0xE0 <= marker <= 0xEF or marker == 0xFE) or (
            marker == 0xEE and seg[4:9] == b"Adobe")
        if keep:
            out += seg
        if marker == 0xDA:  # SOS: copy the entropy-coded data up to the next real marker
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise StripError("scan runs past the end")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    j += 1 if nxt == 0xFF else 2
                    continue
                break
            out += data[i:j]
            i = j
    raise StripError("no EOI")


def strip_webp(data: bytes) -> bytes:
    """The WebP without its EXIF, XMP and ICC chunks (VP8X flags updated); bitstream kept."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise StripError("not a WebP")
    chunks, i = [], 12
    while i + 8 <= len(data):
        tag, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        body = data[i + 8:i + 8 + size]
        if len(body) != size:
            raise StripError("truncated chunk")
        i += 8 + size + (size & 1)
        if tag in (b"EXIF", b"XMP ", b"ICCP"):
            continue
        if tag == b"VP8X":
            body = bytes([body[0] & ~(0x20 | 0x08 | 0x04)]) + body[1:]
        chunks.append(tag + struct.pack("<I", size) + body + (b"\0" if size & 1 else b""))
    payload = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def pixels_only(img: Image.Image) -> Image.Image:
    """A new image with the same pixels and no info dict (no text, ICC, EXIF, dpi)."""
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    if img.mode == "P":
        clean.putpalette(img.getpalette())
    return clean


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG of the pixels alone (fast zlib level: training copies, not archives)."""
    buf = io.BytesIO()
    pixels_only(img).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg_like(img: Image.Image, like: Image.Image | None) -> bytes:
    """JPEG bytes of img, with the quantisation tables and subsampling of `like` (the original
    JPEG) when there is one, else quality 95: a re-encode that keeps the original's quality."""
    from PIL import JpegImagePlugin

    buf = io.BytesIO()
    clean = pixels_only(img)
    if like is not None and getattr(like, "quantization", None):
        sampling = JpegImagePlugin.get_sampling(like)
        clean.save(buf, "JPEG", qtables=like.quantization,
                   subsampling=sampling if sampling >= 0 else 0)
    else:
        clean.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, SyntaxError, OSError):
        return 1


def upright(img: Image.Image) -> Image.Image:
    """The pixels turned as the EXIF orientation says (a no-op for orientation 1)."""
    return ImageOps.exif_transpose(img) if orientation(img) != 1 else img


def has_metadata(data: bytes) -> list[str]:
    """What metadata a file still holds (for tests and audits): EXIF, XMP, ICC, text, C2PA."""
    img = Image.open(io.BytesIO(data))
    img.load()
    found = []
    info = img.info
    if "exif" in info or img.getexif():
        found.append("exif")
    if any(k in info for k in ("xmp", "XML:com.adobe.xmp")):
        found.append("xmp")
    if "icc_profile" in info:
        found.append("icc")
    text = {k for k in getattr(img, "text", {}) or {}}
    if text:
        found.append("text")
    if b"c2pa" in data or b"jumb" in data or b"caBX" in data:
        found.append("c2pa")
    if img.format == "JPEG" and any(data[i:i + 2] in (b"\xff\xe1", b"\xff\xe2", b"\xff\xed",
                                                       b"\xff\xeb", b"\xff\xfe")
                                    for i in _segment_offsets(data)):
        found.append("app-segment")
    return found


def _segment_offsets(data: bytes) -> list[int]:
    """Offsets of the JPEG's header segments (up to the first SOS)."""
    offs, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        offs.append(i)
        if marker == 0xDA:
            break
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return offs
