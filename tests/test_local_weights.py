"""Pretrained backbones load from local files exactly as a user with the real weights would."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from detector import presets
from detector.backbones import build_backbone
from detector.service import Detector
from shell.cli import main

from conftest import make_image


def _tiny_full_clip():
    """A whole CLIP (text tower too) of the tiny preset's vision shape, as open_clip saves them."""
    import open_clip

    cfg = presets.TINY_CLIP
    text_cfg = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    return open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                          text_cfg=text_cfg, quick_gelu=True)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-wrapped"])
def test_open_clip_checkpoint_file(tmp_path, fmt):
    clip = _tiny_full_clip()
    state = clip.state_dict()
    path = tmp_path / ("ckpt.safetensors" if fmt == "safetensors" else "ckpt.pt")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state} if fmt == "pt-wrapped" else state, path)
    backbone = build_backbone(presets.tiny().experts[0].backbone, path)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(pixels, "embed")[0], clip.visual.eval()(pixels), atol=1e-6)


@pytest.mark.parametrize("full_model", [False, True])
def test_transformers_model_directory(tmp_path, full_model):
    from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

    vision = SiglipVisionConfig(**{k: v for k, v in presets.TINY_SIGLIP.items() if k != "model_type"})
    if full_model:  # a whole SigLIP (text tower too), as published
        model = SiglipModel(SiglipConfig(
            vision_config=vision.to_dict(),
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 16}))
        reference = model.vision_model
    else:
        model = SiglipVisionModel(vision)
        reference = model
    model.save_pretrained(tmp_path / "siglip")
    backbone = build_backbone(presets.tiny().experts[2].backbone, tmp_path / "siglip")
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ours = backbone(pixels, "pooled")[0]
        theirs = reference.eval()(pixel_values=pixels).pooler_output
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_bundle_init_wraps_local_backbones(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import SiglipVisionConfig, SiglipVisionModel

    clip = _tiny_full_clip()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    cfg = {k: v for k, v in presets.TINY_SIGLIP.items() if k != "model_type"}
    SiglipVisionModel(SiglipVisionConfig(**cfg)).save_pretrained(tmp_path / "siglip")
    out = tmp_path / "bundle"
    assert main(["bundle", "init", "--preset", "tiny", "--out", str(out),
                 "--from-weights", f"clip={tmp_path / 'clip.safetensors'}",
                 "--from-weights", f"siglip={tmp_path / 'siglip'}"]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["provenance"]["pretrained"]["open_clip"].endswith("clip.safetensors")
    detector = Detector.load(out)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = detector.experts[0].backbone(pixels, "embed")[0]
        assert torch.allclose(ours, clip.visual.eval()(pixels), atol=1e-6)
    assert len(detector.predict([make_image()])) == 1


def test_bundle_init_missing_weights_is_a_one_line_error(tmp_path, capsys):
    code = main(["bundle", "init", "--preset", "tiny", "--out", str(tmp_path / "b"),
                 "--from-weights", f"clip={tmp_path / 'missing.pt'}"])
    assert code == 2
    assert "missing.pt" in capsys.readouterr().err
