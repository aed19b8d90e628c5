"""Our spec-driven preprocessing against the libraries' own transforms for the same model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detector.images import decode_image
from detector.preprocess import decode_side, to_batch, to_tensor
from detector.presets import CLIP_224, SIGLIP_384
from detector.spec import HALF, PreprocessSpec

from conftest import image_bytes, make_image

SHAPES = [(300, 200), (200, 300), (224, 224), (97, 413), (640, 480)]


@pytest.mark.parametrize("size", SHAPES)
def test_clip_matches_open_clip_transform(size):
    import open_clip

    ref = open_clip.image_transform(
        224, is_train=False, mean=CLIP_224.mean, std=CLIP_224.std,
        resize_mode="shortest", interpolation="bicubic")
    image = make_image(*size, seed=1)
    ours = to_tensor(image, CLIP_224)
    theirs = ref(image)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_open_clip_preprocess_cfg_of_the_paper_models_matches_our_presets():
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(open_clip.create_model("ViT-L-14", device="meta"))
    assert cfg["size"] in (224, (224, 224))
    assert tuple(cfg["mean"]) == CLIP_224.mean and tuple(cfg["std"]) == CLIP_224.std
    assert cfg["interpolation"] == "bicubic" and cfg["resize_mode"] == "shortest"


@pytest.mark.parametrize("size", SHAPES)
def test_squash_matches_open_clip_squash(size):
    import open_clip

    spec = PreprocessSpec(size=96, resize_mode="squash", mean=HALF, std=HALF)  # as SQUASH_96
    ref = open_clip.image_transform(96, is_train=False, mean=HALF, std=HALF,
                                    resize_mode="squash", interpolation="bicubic")
    image = make_image(*size, seed=2)
    assert torch.allclose(to_tensor(image, spec), ref(image), atol=1e-5)


@pytest.mark.parametrize("size", SHAPES)
def test_siglip_matches_transformers_pil_processor(size):
    from transformers import SiglipImageProcessorPil

    proc = SiglipImageProcessorPil(size={"height": 384, "width": 384})
    image = make_image(*size, seed=3)
    theirs = torch.as_tensor(np.asarray(proc(images=image, return_tensors="np")["pixel_values"][0]))
    ours = to_tensor(image, SIGLIP_384)
    assert ours.shape == theirs.shape == (3, 384, 384)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_siglip_close_to_transformers_torchvision_processor():
    """The default (torchvision) processor resizes tensors with antialiasing; it differs from PIL
    by at most a few grey levels on a few pixels, far below what changes a detector's output."""
    from transformers import SiglipImageProcessor

    proc = SiglipImageProcessor(size={"height": 384, "width": 384})
    image = make_image(500, 350, seed=4)
    theirs = proc(images=image, return_tensors="pt")["pixel_values"][0]
    diff = (to_tensor(image, SIGLIP_384) - theirs).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.2


def test_non_rgb_inputs_are_converted():
    for mode in ("L", "RGBA", "P", "CMYK"):
        t = to_tensor(make_image(50, 40, mode=mode), CLIP_224)
        assert t.shape == (3, 224, 224) and torch.isfinite(t).all()


def test_small_images_are_padded_by_longest_mode():
    spec = PreprocessSpec(size=64, resize_mode="longest")
    t = to_tensor(make_image(64, 16), spec)
    assert t.shape == (3, 64, 64)


def test_batch_stacks():
    batch = to_batch([make_image(seed=i) for i in range(3)], CLIP_224)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32


def test_decode_side_is_one_and_a_half_times_the_largest_input():
    assert decode_side([CLIP_224]) == 336
    assert decode_side([CLIP_224, SIGLIP_384]) == 576
    assert decode_side([CLIP_224], margin=2) == 448


def test_detector_decode_side_comes_from_its_experts(tiny_bundle):
    from detector.service import Detector

    detector = Detector.load(tiny_bundle)
    assert detector.decode_side == decode_side(detector.preprocess_specs)
    assert detector.decode_side == math.ceil(
        1.5 * max(spec.size for spec in detector.preprocess_specs))


SQUASH_96 = PreprocessSpec(size=96, resize_mode="squash", mean=HALF, std=HALF)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("spec", [CLIP_224, SQUASH_96], ids=["clip224", "squash96"])
def test_reduced_decode_gives_close_inputs(fmt, spec):
    """What the worker feeds the experts (decoded reduced to decode_side) against a full decode.

    Tolerances, in normalised units (one grey level is 1/255/0.27 = 0.015 with CLIP's std): mean
    below 0.03, about two grey levels, and no value off by more than 0.2. Measured here: mean
    0.004-0.020, max 0.016-0.15; make_image's noise (20 grey levels on every pixel) is far rougher
    than a photo's, and the two routes average it differently. What the bound rules out, measured
    on the same images: a crop one output pixel off gives 0.045-0.056, a nearest-neighbour
    (aliased) halving 0.054, a wrong orientation 1.2. The detector's own verdict on the change
    is bench/decode_fidelity.py's (bench/results/decode-fidelity.json).

    The reduction is checked at margin 2, where these bounds tell a correct route from a broken
    one. At the worker's margin (DECODE_MARGIN, 1.5) this image, noise on every pixel, differs
    by a mean of 0.06 (max 0.40): what a 1.5x resize leaves of the DCT scaling's aliasing on
    white noise. The margin is chosen on the detector's scores over photos (AUC within 0.005),
    not on this image.
    """
    side = decode_side([spec], margin=2.0)
    for size in [(3 * side + 11, 2 * side + 5), (2 * side, 3 * side)]:  # reduced by 2 and 3
        options = {"quality": 95} if fmt != "PNG" else {}
        data = image_bytes(make_image(*size, seed=7), fmt, **options)
        full, reduced = decode_image(data), decode_image(data, min_side=side)
        assert min(reduced.size) < min(full.size)
        diff = (to_tensor(reduced, spec) - to_tensor(full, spec)).abs()
        assert diff.mean() < 0.03 and diff.max() < 0.2, (size, diff.mean(), diff.max())
