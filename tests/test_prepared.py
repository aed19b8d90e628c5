"""Detector.prepare + predict_prepared (the worker's split: per-image preprocessing in the fetch
threads, the batch step on the loop) score as Detector.predict does on the same images."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from detector import presets
from detector.expert import Expert
from detector.preprocess import to_batch
from detector.prepared import normalised, uint8_views
from detector.service import Detector

from conftest import make_image

# Sizes on both sides of the inputs (tiny: 32 and 48), both orientations, and modes to convert.
IMAGES = [make_image(64, 48, seed=0), make_image(30, 90, seed=1), make_image(200, 120, seed=2),
          make_image(48, 48, seed=3, mode="L"), make_image(50, 40, seed=4, mode="RGBA")]


@pytest.fixture(scope="module")
def tiny_experts():
    torch.manual_seed(0)
    spec = presets.tiny("prepared-test")
    return spec, [Expert.build(e).eval() for e in spec.experts]


def assert_same_scores(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-6)
        assert g.spread == pytest.approx(w.spread, abs=1e-6)
        assert g.experts == pytest.approx(w.experts, abs=1e-6)
        assert (g.label, g.model_version) == (w.label, w.model_version)


@pytest.mark.parametrize("tta", [1, 5])
def test_prepared_images_score_as_predict_does(tiny_experts, tta):
    spec, experts = tiny_experts
    detector = Detector(spec, experts, batch_size=2, tta=tta)
    assert len(detector.preprocess_specs) == 2  # two distinct pipelines, each prepared once
    with ThreadPoolExecutor(3) as pool:  # as the worker's fetch threads call it
        prepared = list(pool.map(detector.prepare, IMAGES))
    assert_same_scores(detector.predict_prepared(prepared), detector.predict(IMAGES))
    assert_same_scores(detector.predict_prepared(prepared, uncertain_spread=0.0),
                       detector.predict(IMAGES, uncertain_spread=0.0))
    assert detector.predict_prepared([]) == []


def test_a_prepared_image_is_its_uint8_views_and_nothing_more(tiny_experts):
    spec, experts = tiny_experts
    detector = Detector(spec, experts, tta=2)
    prepared = detector.prepare(make_image(400, 300))
    assert list(prepared) == detector.preprocess_specs
    for pre, pixels in prepared.items():
        assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, pre.size, pre.size)
    assert sum(t.nbytes for t in prepared.values()) == 2 * 3 * (32 * 32 + 48 * 48)


def test_normalising_uint8_views_gives_the_preprocess_tensors():
    pre = presets.tiny().experts[0].preprocess
    images = IMAGES[:3]
    pixels = torch.cat([uint8_views(image, pre, 10) for image in images])
    torch.testing.assert_close(normalised(pixels, pre), to_batch(images, pre, 10),
                               rtol=0, atol=1e-6)
