"""The degradation catalogue: every op keeps size/mode, is deterministic, hurts at its severe level,
keeps geometry when it says it is aligned; and the sampling policy keeps its promises."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from train.degrade.catalogue import OPERATIONS, DegradationPolicy, apply_ops, half_gaussian_weights
from train.degrade.contact_sheet import (
    HEADER_HEIGHT,
    LABEL_WIDTH,
    main_show,
    render_contact_sheet,
    sheet_size,
)

W, H = 96, 72  # not square, so a swapped (w, h) shows
LEVELS = ("mild", "medium", "severe")
MISALIGNING = {
    "jitter", "colour_shift", "pixel_shuffle", "digital_glitch", "ghosting", "colour_bleed",
    "water_drops", "crop_shift", "crop_scale",
}


def _scene(w: int = W, h: int = H, seed: int = 0) -> Image.Image:
    """Colour gradients, hard edges, mid-tones and a little texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=-1)
    arr[h // 4 : h // 2, w // 5 : w // 2] = [0.9, 0.2, 0.1]
    arr[h // 2 :, (2 * w) // 3 :] *= 0.3
    arr += np.random.default_rng(seed).normal(0, 0.03, arr.shape).astype(np.float32)
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")


def _as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


CASES = [(name, level) for name in OPERATIONS for level in LEVELS]


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return _scene()


@pytest.mark.parametrize("name,level", CASES)
def test_op_keeps_size_mode_and_range(scene, name, level):
    op = OPERATIONS[name]
    out = op(scene, op.level_index(level), np.random.default_rng(1))
    assert out.size == scene.size
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert arr.dtype == np.uint8 and arr.shape == (H, W, 3)


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_severe_level_changes_the_image(scene, name):
    op = OPERATIONS[name]
    out = op(scene, op.level_index("severe"), np.random.default_rng(2))
    assert np.abs(_as_array(out) - _as_array(scene)).mean() > 0.5


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_op_is_deterministic_given_the_seed(scene, name):
    op = OPERATIONS[name]
    for level in LEVELS:
        a = op(scene, op.level_index(level), np.random.default_rng(3))
        b = op(scene, op.level_index(level), np.random.default_rng(3))
        assert np.array_equal(np.asarray(a), np.asarray(b)), level


def _square_centroid_shift(name: str, level: str) -> float:
    """How far the centroid of a white square moves. The op also runs on the black background
    with the same seed and that is subtracted, so noise, glows and tints cancel out; only the part
    above half the peak counts, so faint halos and ringing lobes do not pull the centroid."""
    op = OPERATIONS[name]
    black = np.zeros((H, W, 3), np.uint8)
    square = black.copy()
    square[16:32, 48:64] = 255  # on the 8x8 JPEG grid, so block artefacts are symmetric
    index = op.level_index(level)
    on = _as_array(op(Image.fromarray(square), index, np.random.default_rng(4))).mean(axis=2)
    off = _as_array(op(Image.fromarray(black), index, np.random.default_rng(4))).mean(axis=2)
    diff = on - off
    assert diff.max() > 20, "the square vanished"
    weight = np.clip(diff - 0.5 * diff.max(), 0, None)  # the core, not faint halos or ringing
    ys, xs = np.mgrid[0:H, 0:W]
    cy, cx = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
    return float(np.hypot(cy - 23.5, cx - 55.5))


@pytest.mark.parametrize("name,level", [c for c in CASES if OPERATIONS[c[0]].aligned])
def test_aligned_ops_keep_geometry(name, level):
    assert _square_centroid_shift(name, level) <= 1.0


@pytest.mark.parametrize("name", ["crop_shift", "crop_scale", "ghosting"])
def test_misaligning_ops_do_move_content(name):
    assert _square_centroid_shift(name, "severe") > 1.0


def test_catalogue_matches_the_paper():
    basic = [o for o in OPERATIONS.values() if o.tier == "basic"]
    extended = [o for o in OPERATIONS.values() if o.tier == "extended"]
    assert len(basic) == 12 and len({o.group for o in basic}) == 7
    assert all(len(o.levels) == 5 for o in basic)
    assert len(extended) == 19 and all(len(o.levels) == 15 for o in extended)
    assert {n for n, o in OPERATIONS.items() if not o.aligned} == MISALIGNING
    assert OPERATIONS["gaussian_blur"].levels == (0.1, 0.5, 1, 2, 5)
    assert OPERATIONS["lens_blur"].levels == (1, 2, 4, 6, 8)
    assert OPERATIONS["colour_shift"].levels == (1, 3, 6, 8, 12)
    assert OPERATIONS["saturation"].levels == (0.4, 0.2, 0.1, 0, -0.4)
    assert OPERATIONS["jpeg"].levels == (43, 36, 24, 7, 4)
    assert OPERATIONS["linear_contrast"].levels == (0, 0.15, -0.4, 0.3, -0.6)
    ends = {"white_noise": (0.001, 0.01), "impulse_noise": (0.001, 0.03), "brighten": (0.1, 1.1),
            "darken": (0.05, 0.8), "jitter": (0.05, 1), "quantisation": (20, 7),
            "jpeg_blockiness": (40, 5), "gif_palette": (128, 16), "motion_blur": (5, 21),
            "iso_noise": (400, 6400), "ghosting": ((2, 0.1), (15, 0.4))}
    for name, (mild, severe) in ends.items():
        assert (OPERATIONS[name].levels[0], OPERATIONS[name].levels[-1]) == (mild, severe), name


def _draws(policy: DegradationPolicy, n: int = 4000, seed: int = 0) -> list[list[tuple[str, int]]]:
    rng = np.random.default_rng(seed)
    return [policy.sample(rng) for _ in range(n)]


def test_policy_degrades_with_p_0_8_and_respects_the_op_count():
    draws = _draws(DegradationPolicy())
    rate = sum(bool(d) for d in draws) / len(draws)
    assert abs(rate - 0.8) < 0.03
    assert all(1 <= len(d) <= 3 for d in draws if d)
    assert {len(d) for d in draws if d} == {1, 2, 3}


def test_policy_never_draws_two_ops_of_one_group():
    for d in _draws(DegradationPolicy()):
        groups = [OPERATIONS[name].group for name, _ in d]
        assert len(groups) == len(set(groups)), d


def test_policy_mixes_basic_and_extended_about_evenly():
    tiers = Counter(OPERATIONS[n].tier for d in _draws(DegradationPolicy()) for n, _ in d)
    assert 0.7 < tiers["basic"] / tiers["extended"] < 1.4
    assert tiers["geometry"] > 0 and tiers["chain"] > 0


def test_aligned_only_never_draws_a_misaligning_op():
    draws = _draws(DegradationPolicy(aligned_only=True))
    assert all(OPERATIONS[name].aligned for d in draws for name, _ in d)
    assert sum(bool(d) for d in draws) > 0.7 * len(draws)


def test_mild_levels_are_drawn_more_often_than_severe():
    draws = _draws(DegradationPolicy(p_degrade=1.0), n=6000)
    for tier, n_levels in (("basic", 5), ("extended", 15)):
        counts = Counter(level for d in draws for name, level in d if OPERATIONS[name].tier == tier)
        assert counts[0] > 2 * counts[n_levels - 1] > 0, (tier, counts)
        assert counts[0] > counts[n_levels // 2] > counts[n_levels - 1]
    weights = half_gaussian_weights(5, 2.5)
    assert np.isclose(weights.sum(), 1) and np.all(np.diff(weights) < 0)


def test_apply_and_apply_ops_reproduce_the_same_degradation(scene):
    policy = DegradationPolicy(p_degrade=1.0)
    out, applied = policy.apply(scene, np.random.default_rng(11))
    assert out.size == scene.size and out.mode == "RGB" and 1 <= len(applied) <= 3
    again = apply_ops(scene, applied, np.random.default_rng(5))
    twin = apply_ops(scene, applied, np.random.default_rng(5))
    assert np.array_equal(np.asarray(again), np.asarray(twin))
    assert apply_ops(scene, [], np.random.default_rng(0)) is scene


def test_contact_sheet_has_the_expected_grid(tmp_path):
    tile = 48
    path = render_contact_sheet(_scene(), tmp_path / "sheet.png", tile=tile)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == sheet_size(len(OPERATIONS), len(LEVELS), tile)
        assert sheet.size == (LABEL_WIDTH + 4 * tile, HEADER_HEIGHT + len(OPERATIONS) * tile)


def test_main_show_writes_a_sheet_from_a_file(tmp_path):
    src = tmp_path / "in.jpg"
    _scene(120, 90).save(src, format="JPEG")
    out = main_show(src, tmp_path / "out" / "sheet.png")
    with Image.open(out) as sheet:
        assert sheet.size == sheet_size(len(OPERATIONS), 3, 160)
