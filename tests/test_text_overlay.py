"""Words drawn onto images: the confound breaker's text overlay and eval's text/words probe."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
from PIL import Image

from train.data.samples import PrepConfig, prepare, prepare_encoded
from train.data.text_overlay import draw_words
from train.evaluate.scoring import TEXT, degrade_family, make_conditions


def _photo(size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(90, 160, (size[1], size[0], 3), dtype=np.uint8))


def _changed(a: Image.Image, b: Image.Image) -> float:
    return float(np.mean(np.any(np.asarray(a) != np.asarray(b), axis=2)))


def test_words_are_drawn_in_place_and_repeat_with_the_seed():
    img = _photo()
    one = draw_words(img, np.random.default_rng(7))
    assert one.size == img.size and one.mode == "RGB"
    assert 0.002 < _changed(img, one) < 0.9  # some pixels, never the whole picture
    assert np.array_equal(np.asarray(one), np.asarray(draw_words(img, np.random.default_rng(7))))
    assert not np.array_equal(np.asarray(one), np.asarray(draw_words(img, np.random.default_rng(8))))
    assert np.array_equal(np.asarray(img), np.asarray(_photo()))  # the input is left alone


def test_the_drawing_scales_with_the_image():
    small, large = _photo((200, 150)), _photo((1600, 1200))
    shares = [np.mean([_changed(im, draw_words(im, np.random.default_rng(s))) for s in range(12)])
              for im in (small, large)]
    assert 0.3 < shares[0] / shares[1] < 3  # about the same share of the picture at any size


def test_prep_draws_words_at_its_rate_and_leaves_the_stream_alone_when_off():
    img = _photo((240, 240))  # square: the crop is the whole image whatever the seed
    base = PrepConfig(enabled=True, crop_fraction=(1.0, 1.0), resize=(1.0, 1.0), p_jpeg=0.0)
    off = prepare(img, base, 64, np.random.default_rng(3))
    always = PrepConfig(**{**asdict(base), "text_overlay": 1.0})
    assert _changed(off, prepare(img, always, 64, np.random.default_rng(3))) > 0.002
    # Off draws nothing from the random stream: views of banks built before it stay the same.
    rng = np.random.default_rng(3)
    prepare(img, base, 64, rng)
    after_off = rng.random()
    rng = np.random.default_rng(3)
    prepare(img, PrepConfig(**{**asdict(base), "text_overlay": 0.0}), 64, rng)
    assert rng.random() == after_off
    half = PrepConfig(**{**asdict(base), "text_overlay": 0.5})
    drawn = [_changed(off, prepare(img, half, 64, np.random.default_rng(s))) > 0 for s in range(40)]
    assert 8 <= sum(drawn) <= 32


def test_words_go_in_before_the_jpeg_so_they_are_compressed_like_the_rest():
    img = _photo()
    cfg = PrepConfig(enabled=True, crop_fraction=(1.0, 1.0), resize=(1.0, 1.0), p_jpeg=1.0,
                     jpeg_quality=(60, 60), text_overlay=1.0)
    out, encoded = prepare_encoded(img, cfg, 64, np.random.default_rng(0))
    assert encoded is not None and encoded[:2] == b"\xff\xd8"


def test_key_fields_name_old_banks_as_before_and_new_ones_apart():
    off = PrepConfig(enabled=True)
    assert off.key_fields() == {k: v for k, v in asdict(off).items() if k != "text_overlay"}
    assert PrepConfig(enabled=True, text_overlay=0.25).key_fields()["text_overlay"] == 0.25


def test_eval_text_condition_draws_words():
    assert [c.name for c in make_conditions([], text=True)] == ["clean", "text/words"]
    assert [c.name for c in make_conditions([], jpeg_qualities=[30])] == ["clean", "jpeg/q30"]
    img = _photo()
    out = degrade_family(img, TEXT.family, TEXT.level, np.random.default_rng(0))
    assert _changed(img, out) > 0.002
