"""Named ensemble shapes: `paper` (the published architectures) and `tiny` (tests and demos).

The paper's SigLIP config is written out here so the architecture can be built (on the meta
device, or to wrap local weights) without fetching a config from a hub.
"""
from __future__ import annotations

from dataclasses import replace

from detector.spec import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    BackboneSpec,
    EnsembleSpec,
    ExpertSpec,
    HeadSpec,
    PreprocessSpec,
)

# google/siglip-so400m-patch14-384, vision tower.
SIGLIP_SO400M_384 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}

CLIP_224 = PreprocessSpec(size=224, resize_mode="shortest", crop=True, mean=CLIP_MEAN, std=CLIP_STD)
SIGLIP_384 = PreprocessSpec(size=384, resize_mode="squash", crop=True, mean=HALF, std=HALF)


def clip_expert(name: str, model: str = "ViT-L-14", config=None, preprocess=CLIP_224, dim=768):
    return ExpertSpec(
        name=name,
        backbone=BackboneSpec("open_clip", model, dict(config or {})),
        feature="embed",
        preprocess=preprocess,
        head=HeadSpec(in_dim=dim),
    )


def siglip_expert(name: str, config=None, preprocess=SIGLIP_384, dim=1152):
    return ExpertSpec(
        name=name,
        backbone=BackboneSpec("transformers", "SiglipVisionModel", dict(config or SIGLIP_SO400M_384)),
        feature="pooled",
        preprocess=preprocess,
        head=HeadSpec(in_dim=dim),
    )


def paper(version: str = "paper-untrained") -> EnsembleSpec:
    return EnsembleSpec(
        experts=(
            clip_expert("clip-l14-a"),
            clip_expert("clip-l14-b"),
            siglip_expert("siglip-so400m-a"),
            siglip_expert("siglip-so400m-b"),
        ),
        threshold=0.5,
        version=version,
    )


# Tiny: the same classes and code paths as the paper's, a few hundred thousand parameters each.
TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
}
TINY_SIGLIP = {
    "model_type": "siglip_vision_model",
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
    "image_size": 48,
    "patch_size": 8,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}


def tiny(version: str = "tiny-untrained") -> EnsembleSpec:
    clip_pre = PreprocessSpec(size=32, resize_mode="shortest", crop=True, mean=CLIP_MEAN, std=CLIP_STD)
    siglip_pre = PreprocessSpec(size=48, resize_mode="squash", crop=True, mean=HALF, std=HALF)
    return EnsembleSpec(
        experts=(
            clip_expert("clip-tiny-a", "ViT-B-16-quickgelu", TINY_CLIP, clip_pre, 32),
            clip_expert("clip-tiny-b", "ViT-B-16-quickgelu", TINY_CLIP, clip_pre, 32),
            siglip_expert("siglip-tiny-a", TINY_SIGLIP, siglip_pre, 48),
            siglip_expert("siglip-tiny-b", TINY_SIGLIP, siglip_pre, 48),
        ),
        threshold=0.5,
        version=version,
    )


# google/siglip-base-patch16-224, vision tower.
SIGLIP_BASE_224 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}


def base(version: str = "base-untrained") -> EnsembleSpec:
    """The paper's layout at ViT-B size (about 4 x 90 M parameters): CPU benchmarks, starters."""
    siglip_pre = PreprocessSpec(size=224, resize_mode="squash", crop=True, mean=HALF, std=HALF)
    return EnsembleSpec(
        experts=(
            clip_expert("clip-b16-a", "ViT-B-16-quickgelu", dim=512),
            clip_expert("clip-b16-b", "ViT-B-16-quickgelu", dim=512),
            siglip_expert("siglip-b16-a", SIGLIP_BASE_224, siglip_pre, 768),
            siglip_expert("siglip-b16-b", SIGLIP_BASE_224, siglip_pre, 768),
        ),
        threshold=0.5,
        version=version,
    )


# The starter: OpenAI CLIP ViT-B/16 (converted offline: `featdistill weights import-onnx`), its
# first 10 of 12 blocks frozen and shared, so one trunk pass serves all four experts; each expert
# owns its last two blocks (low-rank tuned) and its head.
STARTER_SHARED_BLOCKS = 10


def starter(version: str = "starter-untrained") -> EnsembleSpec:
    experts = tuple(
        replace(clip_expert(f"starter-{tag}", "ViT-B-16-quickgelu", dim=512),
                shared_blocks=STARTER_SHARED_BLOCKS)
        for tag in "abcd")
    return EnsembleSpec(experts=experts, threshold=0.5, version=version)


def univfd(version: str = "univfd-untrained") -> EnsembleSpec:
    """The baseline: a linear probe on the frozen CLIP ViT-B/16 embedding (UnivFD's recipe)."""
    probe = clip_expert("univfd-probe", "ViT-B-16-quickgelu", dim=512)
    probe = replace(probe, head=replace(probe.head, hidden=0, dropout=0.0),
                    shared_blocks=STARTER_SHARED_BLOCKS)
    return EnsembleSpec(experts=(probe,), threshold=0.5, version=version)


# facebook/dinov2-small (ViT-S/14, 22 M parameters): a second kind of backbone, self-supervised
# rather than contrastive. Its position grid is 37 x 37 (518 px); transformers interpolates it to
# the 16 x 16 patches of a 224 px input. Converted offline: scripts/fetch_dinov2_backbone.sh.
DINOV2_S14 = {
    "model_type": "dinov2",
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_224 = PreprocessSpec(size=224, resize_mode="shortest", crop=True, mean=IMAGENET_MEAN,
                            std=IMAGENET_STD)


def dinov2_expert(name: str, config=None, preprocess=DINOV2_224, dim=384, shared_blocks=0):
    return ExpertSpec(
        name=name,
        backbone=BackboneSpec("transformers", "Dinov2Model", dict(config or DINOV2_S14)),
        feature="pooled",
        preprocess=preprocess,
        head=HeadSpec(in_dim=dim),
        shared_blocks=shared_blocks,
    )


def dinov2(version: str = "dinov2-untrained") -> EnsembleSpec:
    """The starter's layout on DINOv2 ViT-S/14: first 10 of 12 blocks frozen and shared, each
    expert's last two blocks low-rank tuned; plus `dinov2-probe`, the UnivFD-style linear probe
    on its class token (train one expert of the preset at a time: `dinov2:<name>`)."""
    experts = tuple(dinov2_expert(f"dinov2-s14-{tag}", shared_blocks=STARTER_SHARED_BLOCKS)
                    for tag in "ab")
    probe = dinov2_expert("dinov2-probe", shared_blocks=STARTER_SHARED_BLOCKS)
    probe = replace(probe, head=replace(probe.head, hidden=0, dropout=0.0))
    return EnsembleSpec(experts=experts + (probe,), threshold=0.5, version=version)


PRESETS = {"paper": paper, "base": base, "tiny": tiny, "starter": starter, "univfd": univfd,
           "dinov2": dinov2}
