"""Test-time augmentation: one view scores as before; N views average the views' P(fake)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from detector.preprocess import TTA_SCALE, TTA_VIEWS, to_batch, to_tensor, to_views
from detector.service import Detector
from shell.cli import main
from train.data.samples import open_sample
from train.data.toy import write_toy_dataset
from train.evaluate.scoring import Condition, score

from conftest import make_image

IMAGES = [make_image(40 + 9 * i, 30 + 5 * i, seed=i) for i in range(5)]


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle, batch_size=3)


def _plain_probabilities(detector: Detector, images) -> torch.Tensor:
    """The pipeline as it was before TTA: one to_tensor per image and spec."""
    inputs = {spec: torch.stack([to_tensor(img, spec) for img in images])
              for spec in detector.preprocess_specs}
    return detector.probabilities_of(inputs)


def _hand_view(img: Image.Image, spec, crop: str, flip: bool) -> torch.Tensor:
    """A view built without the module's helpers: the centre view is to_tensor, a corner is a
    crop of the image resized TTA_SCALE larger (short side, or both sides when squashed)."""
    if crop == "centre":
        view = to_tensor(img, spec)
    else:
        big = round(spec.size * TTA_SCALE)
        w, h = img.size
        if spec.resize_mode == "squash":
            new = (big, big)
        else:
            new = (big, int(big * h / w)) if w <= h else (int(big * w / h), big)
        resized = img.resize(new, Image.Resampling.BICUBIC)
        s = spec.size
        left = 0 if crop.endswith("left") else resized.width - s
        top = 0 if crop.startswith("top") else resized.height - s
        view = to_tensor(resized.crop((left, top, left + s, top + s)),
                         dataclasses.replace(spec, resize_mode="squash"))
    return view.flip(-1) if flip else view


def test_one_view_is_exactly_the_plain_pipeline(tiny_bundle, detector):
    for spec in detector.preprocess_specs:
        assert torch.equal(to_views(IMAGES[0], spec, 1)[0], to_tensor(IMAGES[0], spec))
    plain = _plain_probabilities(detector, IMAGES)
    assert torch.equal(detector.expert_probabilities(IMAGES), plain)
    explicit = Detector.load(tiny_bundle, batch_size=3, tta=1)
    assert [s.score for s in explicit.predict(IMAGES)] == [float(m) for m in plain.mean(0)]


@pytest.mark.parametrize("views", [2, 5, 10])
def test_views_are_averaged_as_by_hand(tiny_bundle, detector, views):
    tta = Detector.load(tiny_bundle, batch_size=3, tta=views)
    per_view = []
    for crop, flip in TTA_VIEWS[views]:
        inputs = {spec: torch.stack([_hand_view(img, spec, crop, flip) for img in IMAGES])
                  for spec in detector.preprocess_specs}
        per_view.append(detector.probabilities_of(inputs))
    expected = torch.stack(per_view).mean(0)  # (experts, images)
    got = tta.expert_probabilities(IMAGES)
    assert got.shape == (len(detector.experts), len(IMAGES))
    assert torch.allclose(got, expected, atol=1e-5)
    scores = tta.predict(IMAGES)
    assert [s.score for s in scores] == pytest.approx(expected.mean(0).tolist(), abs=1e-5)
    assert not torch.allclose(got, _plain_probabilities(detector, IMAGES), atol=1e-6)


def test_batch_shapes_and_chunking(tiny_bundle, detector):
    for spec in detector.preprocess_specs:
        batch = to_batch(IMAGES, spec, 5)
        assert batch.shape == (len(IMAGES) * 5, 3, spec.size, spec.size)
        assert torch.equal(batch[5:10], to_views(IMAGES[1], spec, 5))  # image-major
    # Chunks of 1, 3 (across images' view groups) and all: the same scores.
    runs = [Detector.load(tiny_bundle, batch_size=b, tta=5).predict(IMAGES) for b in (1, 3, 64)]
    for a, b, c in zip(*runs):
        assert a.score == pytest.approx(b.score, abs=1e-5) == pytest.approx(c.score, abs=1e-5)
    assert Detector.load(tiny_bundle, tta=5).predict([]) == []
    small = make_image(12, 9, seed=7)  # smaller than every input: padded, still square views
    assert to_views(small, detector.preprocess_specs[0], 10).shape[0] == 10
    with pytest.raises(ValueError, match="views per image"):
        detector.probabilities_of({s: to_batch(IMAGES, s, 2)[:-1] for s in detector.preprocess_specs}, 2)


def test_unknown_view_counts_are_refused(tiny_bundle, image_dir):
    with pytest.raises(ValueError, match="test-time augmentation"):
        Detector.load(tiny_bundle, tta=3)
    with pytest.raises(SystemExit):
        main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--tta", "3"])


def test_detect_cli_scores_with_tta(tiny_bundle, image_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--tta", "5", "--no-progress"]) == 0
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    detector = Detector.load(tiny_bundle, tta=5)
    for path, row in rows.items():
        expected = detector.predict([Image.open(path).convert("RGB")])[0].score
        assert row["score"] == pytest.approx(expected, abs=1e-5)


def test_eval_scores_through_the_same_views(tiny_bundle, tmp_path):
    data = write_toy_dataset(tmp_path / "data", count=8, size=40, seed=1)
    out = tmp_path / "report"
    assert main(["eval", "--bundle", str(tiny_bundle), "--data", str(data), "--out", str(out),
                 "--tta", "2", "--jpeg", "30"]) == 0
    assert json.loads((out / "report.json").read_text())["tta"] == 2
    assert "(TTA 2 views)" in (out / "report.md").read_text()
    from train.data.records import SourceConfig, read_source

    samples = read_source(SourceConfig(path=str(data)), training=False)
    for views in (1, 2):
        detector = Detector.load(tiny_bundle, tta=views)
        scored = score(detector, samples, [Condition()], batch_size=3)[0]
        direct = detector.expert_probabilities([open_sample(s) for s in samples])
        assert torch.allclose(torch.from_numpy(scored).float(), direct, atol=1e-5)
