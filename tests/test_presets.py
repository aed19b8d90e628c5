"""Every registered preset builds and runs on random input, as timm checks its models.

The paper's towers (ViT-L/14, SigLIP so400m) are built with their real widths, heads, patch
and image sizes but only two blocks: the classes, configs and feature paths are the preset's,
and the test stays within seconds and a few GB. ViT-B presets run whole.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from detector import presets
from detector.expert import Expert
from detector.service import Detector

from conftest import make_image

FULL_DEPTH_PARAMS = 150_000_000  # ViT-B (86 M) runs whole; ViT-L and so400m are shortened


def _shortened(spec):
    """The same expert with two blocks, unless it is small enough to run whole."""
    backbone = spec.backbone
    if backbone.backend == "open_clip" and "L-14" in backbone.model:
        config = copy.deepcopy(backbone.config)
        config.setdefault("vision_cfg", {})["layers"] = 2
    elif backbone.backend == "transformers" and backbone.config.get("num_hidden_layers", 0) > 12:
        config = {**backbone.config, "num_hidden_layers": 2}
    else:
        return spec
    return replace(spec, backbone=replace(backbone, config=config))


CASES = [(name, i) for name, make in presets.PRESETS.items()
         for i in range(len(make().experts))]


@pytest.mark.parametrize("name, index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_each_expert_of_each_preset_runs_on_random_input(name, index):
    spec = _shortened(presets.PRESETS[name]().experts[index])
    torch.manual_seed(index)
    expert = Expert.build(spec).eval()
    size = spec.preprocess.size
    with torch.no_grad():
        logits, tokens = expert(torch.randn(2, 3, size, size), blocks=[0])
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert tokens[0].shape[0] == 2 and torch.isfinite(tokens[0]).all()
    probs = Expert.prob_fake(logits)
    assert ((probs >= 0) & (probs <= 1)).all()


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_each_preset_is_a_consistent_ensemble(name):
    spec = presets.PRESETS[name]()
    names = [e.name for e in spec.experts]
    assert len(set(names)) == len(names) and 0 < spec.threshold < 1
    for expert in spec.experts:
        shared = expert.shared_blocks
        assert shared == 0 or shared == spec.experts[0].shared_blocks


def test_the_tiny_preset_runs_through_the_detector():
    spec = presets.tiny("presets-test")
    experts = [Expert.build(e).eval() for e in spec.experts]
    scores = Detector(spec, experts).predict([make_image(seed=s) for s in range(3)])
    assert len(scores) == 3 and all(0 <= s.score <= 1 for s in scores)


def test_the_committed_starter_adapter_applies_to_a_backbone_of_its_shape():
    from pathlib import Path

    from detector.adapter import apply_adapter, read_adapter

    path = Path(__file__).resolve().parents[1] / "detector" / "starter" / "starter-v2.adapter.safetensors"
    ensemble, per_expert, meta = read_adapter(path)
    assert len(ensemble.experts) == 2 and meta["backbone_sha256"]  # the model card: experts a and c
    pixels = torch.randn(1, 3, 224, 224)
    for spec in ensemble.experts:
        torch.manual_seed(0)
        expert = Expert.build(spec).eval()  # random weights of the right shape, not CLIP's
        apply_adapter(expert, per_expert[spec.name])
        with torch.no_grad():
            logits, _ = expert(pixels)
        assert logits.shape == (1, 2) and torch.isfinite(logits).all()
