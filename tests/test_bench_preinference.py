"""The pre-inference bench's own arithmetic: the phone mix's spread and the cost model's fit."""
from __future__ import annotations

import numpy as np
import pytest

from bench.photos import PHONE_MIX
from bench.preinference import cost_model


def test_phone_mix_spans_the_issues_set():
    megapixels = [mp for mp, _, _ in PHONE_MIX]
    assert len(PHONE_MIX) == 12
    assert min(megapixels) == 1.2 and max(megapixels) == 14.7
    assert np.mean(megapixels) == pytest.approx(6.7, abs=0.05)
    assert all(85 <= quality <= 92 for _, quality, _ in PHONE_MIX)


def test_cost_model_recovers_a_known_cost_and_the_budget():
    rng = np.random.default_rng(0)
    mb, mp = rng.uniform(0.2, 4, 30), rng.uniform(1, 15, 30)
    decode = 2 + 9 * mb + 0.5 * mp
    total = decode + 8 + 0.25 * mp  # hash and preprocess: fixed, and a little per pixel
    model = cost_model(list(zip(mb, mp, decode, total)), budget_ms=25)
    assert model["decode"]["ms_per_mb"] == pytest.approx(9, abs=0.01)
    assert model["total"] == {"ms_fixed": 10.0, "ms_per_mb": 9.0, "ms_per_mp": 0.75,
                              "rms_error_ms": 0.0}
    # 10 + 9 MB + 0.75 x 12 = 25 at MB = 6 / 9
    assert model["mb_within_25ms"]["12mp"] == pytest.approx(6 / 9, abs=0.01)
    assert model["points"] == 30
