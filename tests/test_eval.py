"""Metrics against hand-computed values, and `featdistill eval` reports on tiny bundles."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detector import presets
from detector.bundle import read_manifest, save_bundle, verify_files
from detector.expert import Expert
from detector.service import Detector
from shell.cli import main
from train.data.toy import write_toy_dataset
from train.evaluate.metrics import (accuracy, average_precision, best_threshold, binary_metrics,
                           roc_auc, roc_curve, threshold_at_fpr, threshold_interval)

PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ metrics by hand
def test_auc_and_ap_hand_values():
    # fakes 0.35, 0.8; reals 0.1, 0.4: 3 of 4 (fake, real) pairs ordered right.
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert roc_auc(y, s) == pytest.approx(0.75)
    # ranked 0.8 (fake) 0.4 (real) 0.35 (fake): AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3)


def test_auc_and_ap_with_ties():
    # fake 0.5 ties real 0.5 (counts 1/2), beats real 0.2; fake 0.9 beats both: 3.5 / 4
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    assert roc_auc(y, s) == pytest.approx(0.875)
    # thresholds 0.9: P = 1, R = 1/2; 0.5: P = 2/3, R = 1
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5)


def test_auc_extremes_and_missing_class():
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert roc_auc([0, 0, 1], [0.9, 0.8, 0.1]) == 0.0
    assert average_precision([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert roc_auc([1, 1], [0.2, 0.3]) is None and average_precision([0, 0], [0.1, 0.2]) is None


def test_auc_matches_pair_counting_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 2)  # rounded: many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)


def test_roc_curve_points():
    fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0, 0.5, 0.5, 1.0, 1.0]


def test_thresholds_hand_values():
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.9]
    # FPR <= 0.25 allows one real (0.4) above the threshold: the cut falls between 0.35 and 0.3
    t = threshold_at_fpr(y, s, 0.25)
    assert t == pytest.approx(0.325)
    assert accuracy(y, s, t) == pytest.approx(7 / 8)
    assert threshold_at_fpr(y, s, 0.0) == pytest.approx(0.5)  # between 0.6 and 0.4
    assert threshold_at_fpr(y, s, 1.0) == pytest.approx(0.05)  # everything called fake
    thr, acc = best_threshold(y, s)
    assert acc == pytest.approx(7 / 8) and accuracy(y, s, thr) == pytest.approx(7 / 8)
    m = binary_metrics(y, s, 0.5)
    assert m["tpr"] == 0.75 and m["fpr"] == 0.0 and m["acc"] == pytest.approx(7 / 8)


def test_threshold_interval_is_wide_on_few_reals_and_narrow_on_many():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(size=59), rng.uniform(size=5000)
    lo_few, hi_few = threshold_interval(np.zeros(few.size), few, 0.03)
    lo_many, hi_many = threshold_interval(np.zeros(many.size), many, 0.03)
    assert lo_few <= threshold_at_fpr(np.zeros(few.size), few, 0.03) <= hi_few
    assert lo_many <= threshold_at_fpr(np.zeros(many.size), many, 0.03) <= hi_many
    assert hi_many - lo_many < 0.02
    assert hi_few - lo_few > 3 * (hi_many - lo_many)
    assert threshold_interval(np.zeros(few.size), few, 0.03) == (lo_few, hi_few)  # seeded
    with pytest.raises(ValueError):
        threshold_interval([1, 1], [0.2, 0.9], 0.03)


# ------------------------------------------------------------------------- eval command
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("evaldata"), count=24, size=32, seed=3)


def _bundle(out: Path, provenance: dict | None = None, seed: int = 0) -> Path:
    """Two untrained tiny experts (an ensemble), with a chosen provenance."""
    torch.manual_seed(seed)
    spec = presets.tiny("eval-test")
    spec = type(spec)(spec.experts[:1] + spec.experts[2:3], 0.5, "eval-test")
    save_bundle(out, spec, [Expert.build(s) for s in spec.experts], provenance or {})
    return out


def test_eval_writes_report_files_with_sane_values(tmp_path, data):
    bundle = _bundle(tmp_path / "b")
    out = tmp_path / "report"
    assert main(["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(out),
                 "--degrade", "blur,compression", "--levels", "mild,severe", "--jpeg", "30", "--text"]) == 0
    doc = json.loads((out / "report.json").read_text())
    b = doc["bundles"][0]
    assert doc["conditions"] == ["clean", "jpeg/q30", "text/words", "blur/mild", "blur/severe",
                                 "compression/mild", "compression/severe"]
    overall = b["overall"]
    assert overall["ensemble"]["n_real"] == 12 and overall["ensemble"]["n_fake"] == 12
    assert set(overall["experts"]) == {"clip-tiny-a", "siglip-tiny-a"}
    for m in [overall["ensemble"], *overall["experts"].values()]:
        assert 0 <= m["auc"] <= 1 and 0 <= m["ap"] <= 1 and 0 <= m["acc"] <= 1
        assert m["best_acc"] >= m["acc"] - 1e-12
    assert set(b["per_generator"]) == {"toy-checker", "toy-stripes"}
    assert b["per_generator"]["toy-checker"]["ensemble"]["n_fake"] == 6
    assert [(r["family"], r["level"]) for r in b["robustness"]] == [("jpeg", "q30"),
        ("text", "words"), ("blur", "mild"), ("blur", "severe"), ("compression", "mild"), ("compression", "severe")]
    for name in ("roc.png", "robustness.png"):
        assert (out / name).read_bytes()[:8] == PNG
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "compression/severe" in page
    assert "q30" in page
    assert "| ensemble |" in (out / "report.md").read_text()
    # every image's score under every condition, consistent with the report's AUC
    with open(out / f"scores-{bundle.name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 * 7 and set(rows[0]) >= {"key", "label", "condition", "score",
                                                    "clip-tiny-a", "siglip-tiny-a"}
    clean = [r for r in rows if r["condition"] == "clean"]
    labels = np.array([int(r["label"]) for r in clean])
    assert abs(roc_auc(labels, np.array([float(r["score"]) for r in clean]))
               - overall["ensemble"]["auc"]) < 1e-5
    # the share called fake per source and class, as the scores and the threshold say
    by_source = {(r["source"], r["class"]): r for r in b["per_source"]}
    assert sum(r["n"] for r in b["per_source"]) == 24
    for (source, cls), r in by_source.items():
        mine = [float(c["score"]) for c in clean
                if (c["source"].split("@")[0] or "(unnamed)") == source and int(c["label"]) == (cls == "fake")]
        assert len(mine) == r["n"] and abs(np.mean(np.array(mine) >= b["threshold"]) - r["flagged"]) < 1e-9
    assert "by source" in (out / "report.md").read_text()


def test_eval_is_deterministic(tmp_path, data):
    bundle = _bundle(tmp_path / "b")
    docs = []
    for name in ("r1", "r2"):
        assert main(["eval", "--bundle", str(bundle), "--data", str(data), "--out",
                     str(tmp_path / name), "--degrade", "noise", "--levels", "medium"]) == 0
        docs.append(json.loads((tmp_path / name / "report.json").read_text())["bundles"][0])
    assert docs[0]["robustness"] == docs[1]["robustness"]


def test_set_threshold_fpr_rewrites_the_manifest(tmp_path, data, capsys):
    bundle = _bundle(tmp_path / "b")
    assert main(["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--set-threshold-fpr", "0.25"]) == 0
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    assert manifest.ensemble.threshold != 0.5
    assert manifest.provenance["threshold_choice"]["target_fpr"] == 0.25
    lo, hi = manifest.provenance["threshold_choice"]["interval_90"]
    assert lo <= manifest.ensemble.threshold <= hi
    assert "the threshold is unstable" in capsys.readouterr().err  # 25 % of a dozen toy reals
    detector = Detector.load(bundle)
    assert detector.threshold == manifest.ensemble.threshold
    from train.data.records import read_manifest as read_samples
    from train.data.samples import open_sample
    reals = [s for s in read_samples(data) if not s.label]
    flagged = [sc.label == "ai_generated" for sc in detector.predict([open_sample(s) for s in reals])]
    assert np.mean(flagged) <= 0.25


def test_loo_scores_each_bundle_on_its_held_out_part(tmp_path, data):
    bundles = []
    for i, gen in enumerate(("toy-checker", "toy-stripes")):
        other = "toy-stripes" if gen == "toy-checker" else "toy-checker"
        split = {"kind": "leave_out", "seed": 0, "holdout": [gen], "real_fraction": 0.5}
        prov = {"data": {"split": split, "train_generators": [other]}}
        bundles.append(_bundle(tmp_path / f"loo-{gen}", prov, seed=i))
    args = ["eval", "--data", str(data), "--out", str(tmp_path / "r"), "--loo"]
    for b in bundles:
        args += ["--bundle", str(b)]
    assert main(args) == 0
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["generator"] for r in doc["loo"]] == ["toy-checker", "toy-stripes"]
    for row, b in zip(doc["loo"], doc["bundles"]):
        assert set(b["per_generator"]) == {row["generator"]}  # only its held-out fakes
        assert row["n_fake"] == 6 and 0 < row["n_real"] < 12
    assert doc["loo_mean_auc"] == pytest.approx(np.mean([r["auc"] for r in doc["loo"]]))
    assert "Leave-generators-out" in (tmp_path / "r" / "report.html").read_text()


def test_eval_argument_errors(tmp_path, data, capsys):
    bundle = _bundle(tmp_path / "b")
    base = ["eval", "--data", str(data), "--out", str(tmp_path / "r")]
    assert main(base + ["--bundle", str(bundle), "--bundle", str(bundle)]) == 2
    assert main(base + ["--bundle", str(bundle), "--degrade", "sparkles"]) == 2
    assert main(base + ["--bundle", str(bundle), "--loo"]) == 2  # no split in its provenance
    assert main(base + ["--bundle", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--loo" in err and "sparkles" in err and "manifest.json" in err


def test_jpeg_condition_is_plain_jpeg_at_that_quality():
    from PIL import Image

    from train.evaluate.scoring import JPEG, degrade_family, make_conditions

    assert [c.name for c in make_conditions([], jpeg_qualities=[30, 75])] == [
        "clean", "jpeg/q30", "jpeg/q75"]
    with pytest.raises(ValueError, match="1..100"):
        make_conditions([], jpeg_qualities=[0])
    img = Image.effect_noise((64, 64), 60).convert("RGB")
    low = np.asarray(degrade_family(img, JPEG, "q30", np.random.default_rng(0)), dtype=float)
    high = np.asarray(degrade_family(img, JPEG, "q95", np.random.default_rng(0)), dtype=float)
    ref = np.asarray(img, dtype=float)
    assert np.abs(low - ref).mean() > np.abs(high - ref).mean() > 0
