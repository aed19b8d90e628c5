"""The ensemble: the mean rule, labels, batching invariance, both backends, local weights only."""
from __future__ import annotations

import pytest
import torch

from detector import presets
from detector.backbones import WeightsNotFoundError, build_backbone
from detector.expert import Expert
from detector.service import AI_GENERATED, REAL, UNCERTAIN, Detector, label_for
from detector.spec import BackboneSpec, EnsembleSpec, SpecError

from conftest import make_image


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle, batch_size=2)


def test_verdict_is_the_mean_of_expert_probabilities(detector):
    scores = detector.predict([make_image(seed=i, width=30 + i * 7) for i in range(5)])
    assert len(scores) == 5
    for s in scores:
        assert set(s.experts) == {e.spec.name for e in detector.experts}
        assert s.score == pytest.approx(sum(s.experts.values()) / 4, abs=1e-6)
        assert s.spread == pytest.approx(max(s.experts.values()) - min(s.experts.values()), abs=1e-6)
        assert s.label == (AI_GENERATED if s.score >= detector.threshold else REAL)
        assert s.model_version == "tiny-test"


def test_expert_probability_is_softmax_of_its_head(detector):
    image = make_image(seed=3)
    score = detector.predict([image])[0]
    for expert in detector.experts:
        from detector.preprocess import to_batch

        with torch.inference_mode():
            logits, _ = expert(to_batch([image], expert.spec.preprocess))
        assert score.experts[expert.spec.name] == pytest.approx(
            torch.softmax(logits, -1)[0, 1].item(), abs=1e-6)


def test_batch_size_and_order_do_not_change_scores(tiny_bundle):
    images = [make_image(seed=i) for i in range(7)]
    one = Detector.load(tiny_bundle, batch_size=1).predict(images)
    many = Detector.load(tiny_bundle, batch_size=16).predict(images)
    rev = Detector.load(tiny_bundle, batch_size=3).predict(images[::-1])[::-1]
    for a, b, c in zip(one, many, rev):
        assert a.score == pytest.approx(b.score, abs=1e-5) == pytest.approx(c.score, abs=1e-5)
    assert Detector.load(tiny_bundle).predict([]) == []


def test_label_rule():
    assert label_for(0.7, 0.5) == AI_GENERATED
    assert label_for(0.5, 0.5) == AI_GENERATED
    assert label_for(0.49, 0.5) == REAL
    assert label_for(0.9, 0.5, spread=0.6, max_spread=0.5) == UNCERTAIN
    assert label_for(0.9, 0.5, spread=0.4, max_spread=0.5) == AI_GENERATED


def test_detect_labels_uncertain_by_the_workers_rule(tiny_bundle, image_dir, tmp_path, detector):
    """`featdistill detect --uncertain-spread` and the worker label through the same label_for."""
    import json

    from shell.cli import main

    images = [make_image(seed=i) for i in range(3)]
    assert all(s.label == UNCERTAIN for s in detector.predict(images, uncertain_spread=0.0)
               if s.spread > 0)
    assert [s.label for s in detector.predict(images, uncertain_spread=1.0)] == [
        label_for(s.score, detector.threshold) for s in detector.predict(images)]
    out = tmp_path / "scores.jsonl"
    assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--uncertain-spread", "0", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["label"] for r in rows} == {UNCERTAIN}  # random experts always disagree
    assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle),
                 "--uncertain-spread", "2"]) == 2


def test_detector_reports_parameter_bytes(detector):
    expected = sum(p.numel() * 4 for e in detector.experts for p in e.parameters())
    assert detector.param_bytes() >= expected > 0
    assert detector.peak_memory_bytes() is None  # CPU


def test_open_clip_siglip_config_through_timm():
    """open_clip's SigLIP configs use a timm trunk with attention pooling; a tiny one must work."""
    spec = BackboneSpec("open_clip", "ViT-SO400M-14-SigLIP-384", {
        "embed_dim": 192,
        "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224"},
    })
    backbone = build_backbone(spec).eval()
    pixels = torch.randn(2, 3, 224, 224)
    feature, tokens = backbone(pixels, "embed", blocks=[0, 11])
    assert feature.shape == (2, 192)
    assert [t.shape for t in tokens] == [(2, 196, 192), (2, 196, 192)]
    assert torch.allclose(backbone(pixels, "embed")[0], feature, atol=1e-5)


@pytest.mark.parametrize("expert_index", [0, 2])
def test_token_features_come_from_the_same_pass(expert_index):
    spec = presets.tiny().experts[expert_index]
    expert = Expert.build(spec).eval()
    pixels = torch.randn(2, 3, spec.preprocess.size, spec.preprocess.size)
    logits_plain, _ = expert(pixels)
    logits, tokens = expert(pixels, blocks=[0, 1])
    assert torch.allclose(logits, logits_plain, atol=1e-5)
    patches = (spec.preprocess.size // 8) ** 2
    assert [t.shape[1] for t in tokens] == [patches, patches]


def test_head_must_fit_the_feature():
    spec = presets.tiny().experts[0]
    bad = type(spec)(spec.name, spec.backbone, spec.feature, spec.preprocess,
                     type(spec.head)(in_dim=999))
    with pytest.raises(SpecError, match="head expects 999 inputs"):
        Expert.build(bad)
    with pytest.raises(SpecError, match="offers features"):
        Expert.build(type(spec)(spec.name, spec.backbone, "pooled", spec.preprocess, spec.head))


def test_ensemble_spec_validation():
    spec = presets.tiny().experts[0]
    with pytest.raises(SpecError):
        EnsembleSpec(experts=())
    with pytest.raises(SpecError, match="unique"):
        EnsembleSpec(experts=(spec, spec))
    with pytest.raises(SpecError, match="threshold"):
        EnsembleSpec(experts=(spec,), threshold=1.5)


def test_missing_pretrained_weights_name_the_path_and_spec(tmp_path):
    spec = presets.tiny().experts[0].backbone
    missing = tmp_path / "nope" / "ViT-L-14.safetensors"
    with pytest.raises(WeightsNotFoundError) as err:
        build_backbone(spec, missing)
    assert str(missing) in str(err.value) and "open_clip:ViT-B-16-quickgelu" in str(err.value)
    siglip = presets.tiny().experts[2].backbone
    with pytest.raises(WeightsNotFoundError, match="transformers:SiglipVisionModel"):
        build_backbone(siglip, tmp_path / "no-such-dir")


def test_experts_sharing_a_trunk_run_it_once_and_score_the_same():
    import dataclasses

    torch.manual_seed(0)
    base = presets.tiny().experts[0]
    first = Expert.build(dataclasses.replace(base, name="a", shared_blocks=1)).eval()
    second = Expert.build(dataclasses.replace(base, name="b", shared_blocks=1)).eval()
    third = Expert.build(dataclasses.replace(base, name="c", shared_blocks=1)).eval()
    # a and b: same trunk (block 0 and embeddings), different tails and heads; c: its own trunk.
    trunk = {k: v for k, v in first.state_dict().items()
             if not k.startswith("head") and "resblocks.1." not in k}
    second.load_state_dict({**second.state_dict(), **trunk})
    images = [make_image(seed=i) for i in range(5)]
    spec = EnsembleSpec((first.spec, second.spec, third.spec), 0.5, "v")
    separate = [Detector(spec, [e], batch_size=2).predict(images) for e in (first, second, third)]
    shared = Detector(spec, [first, second, third], batch_size=2)
    assert shared.groups == [[0, 1], [2]]
    assert shared.experts[1].backbone.visual.transformer.resblocks[0] is \
        shared.experts[0].backbone.visual.transformer.resblocks[0]
    for j, score in enumerate(shared.predict(images)):
        for name, alone in zip("abc", separate):
            assert score.experts[name] == pytest.approx(alone[j].score, abs=1e-5)
