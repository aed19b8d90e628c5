"""Every kind of backbone describes its parts (stem, blocks, head), and the parts are the model.

For each kind, built tiny and random: the stem, the blocks and the head run one after another
give the model's own forward; every parameter lies in exactly one part; freezing, low-rank
deltas and trunk sharing follow the parts. A library that renames what a split pass relies on
(open_clip's `_embeds` / `_pool` / `_build_vision_tower`, timm's `_pos_embed`) fails here.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from detector import presets
from detector.backbones import OpenClipBackbone
from detector.expert import Expert
from detector.service import Detector
from detector.spec import BackboneSpec, EnsembleSpec, ExpertSpec, HeadSpec, PreprocessSpec
from train.fit.freeze import apply_trainable
from train.fit.low_rank import add_low_rank

from conftest import make_image

TINY_CLIP_HF = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 32,
                "patch_size": 8, "projection_dim": 16}
# DINOv2 with a 6 x 6 position grid, run at 32 px (4 x 4 patches): the interpolated position
# embeddings of the real one (37 x 37 grid, 224 px input).
TINY_DINOV2 = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 3,
               "num_attention_heads": 2, "mlp_ratio": 2, "patch_size": 8, "image_size": 48,
               "layerscale_value": 0.5}
# open_clip with a timm trunk (as its SigLIP configs): timm's test-size ViT, a projection.
TINY_TIMM = {"embed_dim": 24, "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit",
                                             "timm_model_pretrained": False, "timm_pool": "avg",
                                             "timm_proj": "linear"}}

# kind -> (backbone spec, feature, feature width, input size)
KINDS = {
    "open_clip": (BackboneSpec("open_clip", "ViT-B-16-quickgelu", presets.TINY_CLIP), "embed", 32, 32),
    "open_clip-timm": (BackboneSpec("open_clip", "tiny-timm-vit", TINY_TIMM), "embed", 24, 160),
    "siglip": (BackboneSpec("transformers", "SiglipVisionModel", presets.TINY_SIGLIP), "pooled", 48, 48),
    "clip-hf": (BackboneSpec("transformers", "CLIPVisionModel", TINY_CLIP_HF), "pooled", 32, 32),
    "clip-hf-projection": (BackboneSpec("transformers", "CLIPVisionModelWithProjection",
                                        TINY_CLIP_HF), "embed", 16, 32),
    "dinov2": (BackboneSpec("transformers", "Dinov2Model", TINY_DINOV2), "pooled", 32, 32),
}


def _spec(kind: str, name: str = "x", shared_blocks: int = 0) -> ExpertSpec:
    backbone, feature, dim, size = KINDS[kind]
    return ExpertSpec(name, backbone, feature, PreprocessSpec(size=size), HeadSpec(in_dim=dim, hidden=8),
                      shared_blocks=shared_blocks)


def _build(kind: str, seed: int = 0, **kw) -> Expert:
    torch.manual_seed(seed)
    return Expert.build(_spec(kind, **kw)).eval()


def _pixels(kind: str, n: int = 2) -> torch.Tensor:
    size = KINDS[kind][3]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", KINDS)
def test_stem_blocks_and_head_compose_to_the_models_forward(kind):
    expert = _build(kind)
    backbone, feature = expert.backbone, expert.spec.feature
    pixels = _pixels(kind)
    with torch.no_grad():
        whole, tokens = backbone(pixels, feature, blocks=[1])
        x = backbone.forward_stem(pixels)
        x, kept = backbone.forward_blocks(x, 0, backbone.num_blocks(), keep=[1])
        parts = backbone.forward_head(x, feature)
    assert torch.allclose(parts, whole, atol=1e-5)
    assert torch.allclose(kept[0], tokens[0], atol=1e-5)  # the patch tokens, prefix removed


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_lies_in_exactly_one_part(kind):
    backbone = _build(kind).backbone
    groups = backbone.parameter_groups()
    assert groups.stem and groups.head and all(groups.blocks)
    assert len(groups.blocks) == backbone.num_blocks() == len(backbone.parts().blocks)
    names = groups.stem + [n for b in groups.blocks for n in b] + groups.head
    assert sorted(names) == sorted(n for n, _ in backbone.named_parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("last", [1, 2])
def test_training_the_last_blocks_freezes_exactly_the_stem_and_the_first_blocks(kind, last):
    expert = _build(kind)
    groups = expert.backbone.parameter_groups()
    apply_trainable(expert, last)
    n = len(groups.blocks)
    frozen = {name for name, p in expert.backbone.named_parameters() if not p.requires_grad}
    assert frozen == set(groups.stem) | {name for b in groups.blocks[: n - last] for name in b}
    assert all(p.requires_grad for p in expert.head.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_low_rank_deltas_keep_the_parts_and_the_frozen_trunk(kind):
    expert = _build(kind)
    frozen = expert.backbone.num_blocks() - 1
    before, groups = expert.backbone.trunk_state(frozen), expert.backbone.parameter_groups()
    adapted = add_low_rank(expert, 1, rank=2, alpha=2.0)
    assert adapted and set(adapted) <= set(groups.blocks[-1]) | set(groups.head)
    groups = expert.backbone.parameter_groups()  # parametrised names still find their part
    assert sum(map(len, groups.blocks)) + len(groups.stem) + len(groups.head) == len(
        list(expert.backbone.named_parameters()))
    after = expert.backbone.trunk_state(frozen)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", KINDS)
def test_experts_of_every_kind_share_a_trunk_and_score_as_alone(kind):
    first = _build(kind, seed=0, name="a", shared_blocks=1)
    second = _build(kind, seed=1, name="b", shared_blocks=1)
    second.backbone.load_state_dict({**second.backbone.state_dict(), **first.backbone.trunk_state(1)})
    third = _build(kind, seed=2, name="c", shared_blocks=1)  # its own trunk
    images = [make_image(seed=i, width=40 + 9 * i) for i in range(3)]
    spec = EnsembleSpec((first.spec, second.spec, third.spec), 0.5, "v")
    alone = [Detector(spec, [e], batch_size=2).predict(images) for e in (first, second, third)]
    shared = Detector(spec, [first, second, third], batch_size=2)
    assert shared.groups == [[0, 1], [2]]
    parts = first.backbone.parts()
    for name in (parts.stem[0], parts.blocks[0]):
        assert second.backbone.get_submodule(name) is first.backbone.get_submodule(name)
    assert second.backbone.get_submodule(parts.blocks[1]) is not first.backbone.get_submodule(parts.blocks[1])
    for j, score in enumerate(shared.predict(images)):
        for name, scores in zip("abc", alone):
            assert score.experts[name] == pytest.approx(scores[j].score, abs=1e-5)


def test_the_private_calls_open_clip_and_timm_force_are_still_there():
    """If this fails, a library changed what detector/backbones.py relies on: update the parts."""
    from open_clip.model import _build_vision_tower  # noqa: F401  builds the vision tower alone

    clip = OpenClipBackbone(KINDS["open_clip"][0]).visual
    assert callable(clip._embeds) and callable(clip._pool), "open_clip VisionTransformer changed"
    timm_trunk = OpenClipBackbone(KINDS["open_clip-timm"][0]).visual.trunk
    assert callable(timm_trunk._pos_embed), "timm VisionTransformer changed"


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_backbone_describes_its_parts(name):
    """Full-size towers, built on the meta device (no memory): the parts cover them, and a
    shared trunk fits inside the blocks."""
    for spec in presets.PRESETS[name]().experts:
        with torch.device("meta"):
            backbone = Expert.build(spec).backbone
        groups = backbone.parameter_groups()
        assert groups.stem and groups.head and len(groups.blocks) == backbone.num_blocks()
        assert spec.shared_blocks < backbone.num_blocks()


def test_a_folder_config_is_recorded_in_the_spec(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = {k: v for k, v in presets.TINY_SIGLIP.items() if k != "model_type"}
    SiglipVisionModel(SiglipVisionConfig(**cfg)).save_pretrained(tmp_path / "siglip")
    spec = dataclasses.replace(_spec("siglip"), backbone=BackboneSpec("transformers", "SiglipVisionModel"))
    expert = Expert.build(spec, tmp_path / "siglip")
    assert expert.spec.backbone.config["hidden_size"] == 48
    assert Expert.build(expert.spec).spec == expert.spec  # rebuilds without the folder


def test_a_dinov2_folder_loads_through_the_preset_path_and_keeps_its_features(tmp_path):
    """A Dinov2Model saved as a user's converted folder is, through the dinov2 preset's spec, the
    same model: its pooled feature is the folder model's pooler_output (final-layernorm CLS)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(**{k: v for k, v in TINY_DINOV2.items() if k != "model_type"})).eval()
    model.save_pretrained(tmp_path / "dinov2")
    spec = dataclasses.replace(presets.dinov2().experts[0], preprocess=PreprocessSpec(size=32),
                               head=HeadSpec(in_dim=32))
    expert = Expert.build(spec, tmp_path / "dinov2").eval()
    assert expert.spec.backbone.config["hidden_size"] == 32  # the folder's, not the preset's
    pixels = _pixels("dinov2")
    with torch.no_grad():
        ours, tokens = expert.backbone(pixels, "pooled", blocks=[2])
        theirs = model(pixel_values=pixels)
    assert torch.allclose(ours, theirs.pooler_output, atol=1e-5)
    assert tokens[0].shape == (2, 16, 32)  # 4 x 4 patches, the class token removed
    adapted = add_low_rank(expert, 2, rank=2, alpha=2.0)  # the last 2 blocks' attention and MLP
    matrices = {n.rsplit(".", 2)[-2] for n in adapted}  # transformers 5.x names, or 4.x's
    assert matrices in ({"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"},
                        {"query", "key", "value", "dense", "fc1", "fc2"})
    assert len(adapted) == 12
