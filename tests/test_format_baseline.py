"""The format-only baseline (train/evaluate/format_baseline.py): features, the two numpy models, a run."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from train.data.records import DataError
from train.data.samples import PrepConfig
from train.evaluate import format_baseline as fb
from train.evaluate.metrics import roc_auc


def test_quant_summary_and_features():
    assert fb.quant_summary(None) == (0.0, 0.0, 0.0, 0.0)
    q = {0: [2] + [4] * 63, 1: [8] * 64}
    n, luma, chroma, dc = fb.quant_summary(q)
    assert (n, chroma, dc) == (2.0, 8.0, 2.0) and luma == pytest.approx((2 + 4 * 63) / 64)
    x = fb.features_of(1000, 200, 100, "jpeg", q)
    assert len(x) == len(fb.FEATURES)
    f = dict(zip(fb.FEATURES, x))
    assert f["log_aspect"] == pytest.approx(math.log(2)) and f["is_jpeg"] == 1 and f["is_other"] == 0
    assert f["log_bits_per_pixel"] == pytest.approx(math.log(8000 / 20000))
    assert dict(zip(fb.FEATURES, fb.features_of(10, 5, 5, "GIF", None)))["is_other"] == 1
    with pytest.raises(ValueError):
        fb.features_of(0, 5, 5, "PNG", None)


def test_logistic_and_tree_separate_a_threshold_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 1] > 0.3).astype(float)
    logit = fb.fit_logistic(x, y)
    assert roc_auc(y, logit.score(x)) > 0.99
    assert abs(logit.w[1]) > abs(logit.w[0]) and abs(logit.w[1]) > abs(logit.w[2])
    tree = fb.fit_tree(x, y, depth=2)
    assert tree.feature == 1 and tree.threshold == pytest.approx(0.3, abs=0.1)
    assert roc_auc(y, tree.score(x)) > 0.99
    assert "P(fake)" in "\n".join(tree.describe(["a", "b", "c"]))
    # no signal: a constant feature gives a single leaf, no split
    assert fb.fit_tree(np.zeros((50, 1)), np.r_[np.zeros(25), np.ones(25)]).feature == -1


def test_class_weights_balance():
    w = fb._class_weights(np.array([1.0, 0, 0, 0]))
    assert w[0] == pytest.approx(w[1:].sum())


def _write(tmp_path, name, fmt, size, colour):
    path = tmp_path / name
    Image.new("RGB", size, colour).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return name


def test_run_finds_a_format_confound_and_prep_removes_it(tmp_path):
    rows = ["path,label,generator,source,split"]
    for i in range(12):  # fakes: PNG squares, reals: JPEG landscapes; the same grey pixels
        rows.append(f"{_write(tmp_path, f'f{i}.png', 'PNG', (64 + i, 64 + i), (120, 120, 120))},fake,g,s,train")
        rows.append(f"{_write(tmp_path, f'r{i}.jpg', 'JPEG', (96 + i, 64), (120, 120, 120))},real,,s,train")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "held.csv").write_text("\n".join(r.replace(",train", ",heldout") for r in rows) + "\n")
    report = fb.run(tmp_path / "train.csv", tmp_path / "held.csv")
    assert report["logistic"]["eval_auc"] == 1.0 and report["tree"]["eval_auc"] == 1.0
    assert report["train"]["fake"] == 12 and report["eval"]["real"] == 12
    prep = PrepConfig(enabled=True, crop_fraction=(1.0, 1.0), resize=(1.0, 1.0), jpeg_quality=(90, 90))
    prepared = fb.run(tmp_path / "train.csv", tmp_path / "held.csv", prep=prep, input_size=32)
    assert prepared["per_feature"]["is_jpeg"]["eval_auc"] == 0.5
    assert prepared["per_feature"]["log_aspect"]["eval_auc"] == 0.5
    with pytest.raises(DataError, match="split=heldout"):  # never fit on the held-out manifest
        fb.run(tmp_path / "held.csv", tmp_path / "train.csv")


def test_prepared_features_measure_the_reencoded_file():
    img = Image.new("RGB", (300, 200), (10, 200, 30))
    cfg = PrepConfig(enabled=True, crop_fraction=(1.0, 1.0), resize=(1.0, 1.0), jpeg_quality=(75, 75))
    f = dict(zip(fb.FEATURES, fb.prepared_features(img, cfg, 40, np.random.default_rng(0))))
    assert f["is_jpeg"] == 1 and f["log_width"] == pytest.approx(math.log(40)) and f["q_tables"] >= 1
    f = dict(zip(fb.FEATURES, fb.prepared_features(img, PrepConfig(enabled=True, p_jpeg=0.0), 40,
                                                   np.random.default_rng(0))))
    assert f["is_png"] == 1


def test_cli(tmp_path, capsys):
    rows = ["path,label,generator,source"] + [
        f"{_write(tmp_path, f'{c}{i}.{e}', fmt, (40, 40), (i * 9, 0, 0))},{lab},{g},s"
        for i in range(6) for c, e, fmt, lab, g in (("f", "png", "PNG", "fake", "g"),
                                                    ("r", "jpg", "JPEG", "real", ""))]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert fb.main(["--train", str(tmp_path / "m.csv"), "--eval", str(tmp_path / "m.csv"),
                    "--out", str(tmp_path / "r.json")]) == 0
    assert "logistic  AUC" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
    assert fb.main(["--train", str(tmp_path / "nope.csv"), "--eval", str(tmp_path / "m.csv")]) == 2
