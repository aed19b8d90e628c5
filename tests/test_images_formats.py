"""HEIF/HEIC (phones) and AVIF (the web): decode, orientation, bombs, the allowed-formats setting.

Every file is made here: pillow-heif (a dev dependency) writes HEIC, Pillow writes AVIF; decoding
goes through what the worker uses, Pillow's AVIF plugin and pi-heif's HEIF plugin.
"""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import AvifImagePlugin, Image, ImageFile

from detector.images import ImageDecodeError, ImageLimits, decode_image

from conftest import image_bytes, make_image


def heic_bytes(img: Image.Image, exif: bytes | None = None) -> bytes:
    """A HEIC as a phone writes it: with an EXIF orientation, the pixels are stored as shot and
    the orientation is written twice, as irot/imir boxes (what decoders apply) and in the EXIF."""
    import pillow_heif  # the encoder; never registered as an opener, so pi-heif reads the file

    heif = pillow_heif.from_pillow(img)
    if exif is not None:
        heif[0].info["exif"] = exif
    out = io.BytesIO()
    heif.save(out, quality=90)
    return out.getvalue()


def avif_bytes(img: Image.Image, exif: bytes | None = None) -> bytes:
    """Pillow writes an EXIF orientation as irot/imir boxes."""
    return image_bytes(img, "AVIF", quality=90, speed=10, **({"exif": exif} if exif else {}))


ENCODERS = {"HEIF": heic_bytes, "AVIF": avif_bytes}


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The file with its `ispe` box (the image's declared size, in both formats) claiming
    width x height: the pixels stay those of the small image."""
    assert data.count(b"ispe") == 1
    at = data.index(b"ispe") + 8  # type, then version and flags
    return data[:at] + struct.pack(">II", width, height) + data[at + 8:]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.fixture
def no_pixel_decode(monkeypatch):
    """Any pixel decode fails the test: the plugins' loads and Pillow's own."""
    from pi_heif.as_plugin import HeifImageFile

    def forbidden(*args, **kwargs):
        raise AssertionError("pixels decoded before the limit was checked")

    for cls in (HeifImageFile, AvifImagePlugin.AvifImageFile, ImageFile.ImageFile):
        monkeypatch.setattr(cls, "load", forbidden)


# --- decoding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_heic_and_avif_decode_to_rgb_at_their_size(fmt, mode):
    source = make_image(101, 61, mode=mode)  # odd sizes: HEVC codes 104x64, a crop box gives 101x61
    img = decode_image(ENCODERS[fmt](source))
    assert img.mode == "RGB" and img.size == (101, 61)
    assert mean_difference(img, source.convert("RGB")) < 12  # the picture, lossy-coded


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_exactly_once(fmt, orientation):
    """A wide image with a bright block in one corner, stored with each EXIF orientation: it must
    come out as a PNG with that orientation does, turned once (twice would show as a wrong size or
    the block in another corner)."""
    stored = Image.new("RGB", (128, 64), (20, 20, 20))
    stored.paste((250, 250, 250), (0, 0, 32, 16))
    data = ENCODERS[fmt](stored, exif_with(orientation))
    if orientation != 1:  # the transform is in the boxes, where HEIF and AVIF readers look
        assert b"irot" in data or b"imir" in data
    if fmt == "HEIF":  # and a phone-like HEIC also keeps it in its EXIF
        with Image.open(io.BytesIO(data)) as opened:
            assert opened.info["original_orientation"] == (None if orientation == 1 else orientation)
    expected = decode_image(image_bytes(stored, "PNG", exif=exif_with(orientation)))
    got = decode_image(data)
    assert got.size == expected.size
    assert mean_difference(got, expected) < 6  # a wrong turn: about 28 (1/8 of pixels off by 230)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_reduced_decode_is_a_whole_decode_then_a_box_reduction(fmt):
    data = ENCODERS[fmt](make_image(900, 600))
    reduced = decode_image(data, min_side=100)
    assert reduced.size == (150, 100)  # 600 // 100 = 6
    assert reduced.tobytes() == decode_image(data).reduce(6).tobytes()


def test_a_multi_image_heif_gives_its_primary_image():
    import pillow_heif

    red, blue = Image.new("RGB", (64, 64), (250, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 250))
    heif = pillow_heif.from_pillow(red)
    heif.add_from_pillow(blue)
    out = io.BytesIO()
    heif.save(out, quality=90, primary_index=1)  # the second image is the one to show
    r, g, b = decode_image(out.getvalue()).getpixel((32, 32))
    assert b > 200 and r < 50


# --- bombs and broken files -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_huge_declared_size_is_refused_before_any_pixel_is_decoded(fmt, no_pixel_decode):
    """8000x8000 = 64 MP: over the default 40 MP, under Pillow's own refusal (2 x 89 MP), so our
    check is the one deciding. 64x64 pixels are coded: HEIF has no crop box then, and the
    declared size is the size the plugin reports."""
    bomb = with_declared_size(ENCODERS[fmt](make_image(64, 64)), 8000, 8000)
    with pytest.raises(ImageDecodeError, match="8000x8000 = 64000000 pixels") as err:
        decode_image(bomb, min_side=224)
    assert err.value.kind == "too_many_pixels"


def test_a_heic_cropped_to_a_small_size_cannot_decode_a_large_one():
    """HEIF reports its size after the crop box (clap), so a tiny crop of a large coded image
    passes the size check; libheif then refuses to decode more than the crop plus a coding block
    (64 px) each way. Its refusal (a RuntimeError from the plugin) must be a decode error."""
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (257, 257), (90, 120, 200))).save(
        out, quality=50, tile_size=0)  # odd: coded as 264x264 with a crop box to 257x257
    data = out.getvalue()
    at = data.index(b"clap") + 4  # width and height, each as numerator and denominator
    crop = data[:at] + struct.pack(">IIII", 64, 1, 64, 1) + data[at + 16:]
    with pytest.raises(ImageDecodeError, match="Security limit exceeded") as err:
        decode_image(crop)
    assert err.value.kind == "corrupt_image"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_broken_heic_and_avif_files_are_decode_errors_never_crashes(fmt):
    """Truncations and flipped bytes reach libheif/libavif: whatever they say must come back as an
    ImageDecodeError (a dead letter), never another exception (which would stop the worker)."""
    data = ENCODERS[fmt](make_image(96, 64))
    rng = np.random.default_rng(0)
    broken = [data[:cut] for cut in (12, 40, len(data) // 3, len(data) // 2, len(data) - 10)]
    for _ in range(30):
        flipped = bytearray(data)
        for at in rng.integers(0, len(data), 4):
            flipped[at] ^= 0xFF
        broken.append(bytes(flipped))
    for sample in broken:
        try:
            decode_image(sample)
        except ImageDecodeError:
            pass  # a flipped byte inside the coded pixels may also decode: both are fine


# --- the allowed formats ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_disallowed_format_is_named_and_never_parsed(fmt, monkeypatch):
    from pi_heif.as_plugin import HeifImageFile

    data = ENCODERS[fmt](make_image(64, 48))

    def forbidden(*args, **kwargs):
        raise AssertionError("a disallowed format's parser read the bytes")

    for cls in (HeifImageFile, AvifImagePlugin.AvifImageFile):
        monkeypatch.setattr(cls, "_open", forbidden)
    others = ImageLimits(formats=frozenset({"JPEG", "PNG"}))
    with pytest.raises(ImageDecodeError, match=f"format {fmt} is not allowed") as err:
        decode_image(data, others)
    assert err.value.kind == "unsupported_format"


def test_formats_are_checked_names():
    assert {"HEIF", "AVIF"} <= ImageLimits().formats
    assert ImageLimits(formats=["PNG"]).formats == frozenset({"PNG"})
    with pytest.raises(ValueError, match="unknown image formats .'JPG'."):
        ImageLimits(formats=frozenset({"JPG"}))
    # Garbage is still not an image, not a disallowed format.
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"%PDF-1.4 definitely not an image", ImageLimits(formats=frozenset({"PNG"})))
    assert err.value.kind == "not_an_image"


def test_the_worker_setting_reaches_the_limits():
    from worker.settings import SettingsError, load_settings

    default = load_settings({"FEATDISTILL_BUNDLE": "/b"}).configs().pipeline.image_limits
    assert {"HEIF", "AVIF", "JPEG"} <= default.formats
    env = {"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_IMAGE_FORMATS": json.dumps(["jpeg", "Heif"]),
           "FEATDISTILL_MAX_PIXELS": "1000"}
    limits = load_settings(env).configs().pipeline.image_limits
    assert limits == ImageLimits(1000, frozenset({"JPEG", "HEIF"}))
    for bad in (["JPG"], []):
        with pytest.raises(SettingsError, match="^FEATDISTILL_IMAGE_FORMATS: "):
            load_settings({**env, "FEATDISTILL_IMAGE_FORMATS": json.dumps(bad)})


# --- featdistill detect -------------------------------------------------------------------------

def test_detect_judges_heic_and_avif_files(tiny_bundle, tmp_path):
    from shell.cli import main

    folder = tmp_path / "phone"
    folder.mkdir()
    (folder / "IMG_0001.HEIC").write_bytes(heic_bytes(make_image(120, 90), exif_with(6)))
    (folder / "hero.avif").write_bytes(avif_bytes(make_image(90, 120, seed=1)))
    out = tmp_path / "out.jsonl"
    assert main(["detect", str(folder), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["IMG_0001.HEIC", "hero.avif"]
    assert all(r["error"] is None and 0 <= r["score"] <= 1 for r in rows), rows


# --- the worker, end to end (real Kafka and Redis) ----------------------------------------------

@pytest.mark.services
@pytest.mark.slow
def test_the_worker_judges_heic_and_avif_and_dead_letters_a_disallowed_format(tmp_path):
    from services import require_services
    from worker_runs import Run

    run = Run(tmp_path, require_services())
    try:
        files = {"phone.heic": heic_bytes(make_image(96, 72, seed=1), exif_with(6)),
                 "web.avif": avif_bytes(make_image(80, 80, seed=2)),
                 "old.bmp": image_bytes(make_image(64, 64, seed=3), "BMP")}
        for name, data in files.items():
            (run.images / name).write_bytes(data)
        run.send([(name, (run.images / name).as_uri()) for name in files])
        worker = run.start_worker(
            "w-formats", FEATDISTILL_IMAGE_FORMATS=json.dumps(["JPEG", "PNG", "HEIF", "AVIF"]))
        verdicts, dead = run.results(len(files))
        assert sorted(v["id"] for v in verdicts) == ["phone.heic", "web.avif"], worker.log()
        assert [d["original"]["key"] for d in dead] == ["old.bmp"]
        assert dead[0]["error_kind"] == "decode_unsupported_format"
        assert "format BMP is not allowed" in dead[0]["error"]
        assert worker.terminate() == 0
    finally:
        run.close()
