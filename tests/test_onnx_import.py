"""ONNX CLIP image tower -> open_clip weights, on a tiny transformers model exported here.

The tiny tower is exported twice by the legacy (TorchScript) exporter, which needs no onnxscript:
once fp32, once dynamically quantised to INT8 by onnxruntime as the real starter file was.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from convert import onnx_graph as og  # noqa: E402
from convert import onnx_import as oi  # noqa: E402
from detector.backbones import build_backbone  # noqa: E402
from detector.presets import TINY_CLIP  # noqa: E402
from detector.spec import BackboneSpec  # noqa: E402
from shell.cli import main  # noqa: E402

from conftest import make_image  # noqa: E402

# TINY_CLIP's shape with the tiny transformers model's 4 heads of 16.
CONFIG = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "head_width": 16}}


def _tiny_clip(perturbed: bool):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        patch_size=8, image_size=32, projection_dim=32, hidden_act="quick_gelu",
    )
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(cfg).eval()
    if perturbed:
        # Non-zero biases and LayerNorm offsets, so each one's mapping matters, and weights large
        # enough that attention is peaked, so a transposed q changes the output.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layer_norm" in name or "layrnorm" in name:
                    p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0, 0.3 if p.ndim > 1 else 0.1)
    return model


class _Outputs(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.image_embeds, out.last_hidden_state


def _export(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the legacy exporter
        torch.onnx.export(
            _Outputs(model), (torch.randn(2, 3, 32, 32),), str(path), dynamo=False,
            input_names=["pixel_values"], output_names=["image_embeds", "last_hidden_state"],
            dynamic_axes={"pixel_values": {0: "batch"}},
        )
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path_factory.mktemp("onnx")
    fp32 = _export(_tiny_clip(perturbed=True), folder / "tiny.onnx")
    int8 = folder / "tiny.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def images():
    return [make_image(64, 48, seed=i) for i in range(6)]


def test_fp32_export_converts_exactly(graphs, images, tmp_path):
    out = tmp_path / "tiny.safetensors"
    report = oi.import_onnx(graphs["fp32"], out, images, "ViT-B-16", CONFIG)
    [shipped] = report.agreements  # an fp32 graph is its own exact reference
    assert shipped.min > 0.9999
    assert (report.linear, report.quantised_linear) == (13, 0)  # 2 x (q, k, v, out, fc1, fc2) + proj
    # The graph's QuickGELU picks open_clip's -quickgelu config.
    assert report.spec.model == "ViT-B-16-quickgelu"
    assert report.dims == {"width": 64, "layers": 2, "patch_size": 8, "image_size": 32,
                           "mlp_width": 256, "embed_dim": 32}

    # What was written loads through the project's own path and reproduces the graph.
    backbone = build_backbone(BackboneSpec("open_clip", report.spec.model, CONFIG), out).eval()
    pixels = oi.check_pixels(images, 32)
    with torch.no_grad():
        ours = backbone(pixels, "embed")[0].numpy()
    theirs = oi.onnx_embeddings(graphs["fp32"], pixels.numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_int8_export_is_dequantised(graphs, images):
    report = oi.import_onnx(graphs["int8"], None, images, "ViT-B-16", CONFIG)
    assert report.quantised_linear == report.linear == 13
    # onnxruntime's default quantiser also takes the patch Conv and the position-embedding Gather.
    assert report.quantised == 15
    exact, shipped = report.agreements
    assert (exact.reference, shipped.reference) == ("dequantised", "as shipped")
    # The dequantised graph computes in fp32 what open_clip computes: only the order of float
    # operations differs, worth ~1e-6 in cosine; 1e-4 leaves room on any CPU. The as-shipped
    # figure depends on onnxruntime's INT8 kernels for this CPU (about 0.5 to 0.99), so it is
    # reported, and only its being a cosine is checked here.
    assert exact.min > 0.9999
    assert -1.0 <= shipped.min <= shipped.mean <= 1.0 + 1e-6


def test_the_dequantised_graph_reads_like_an_fp32_export(graphs):
    import onnx

    int8 = onnx.load(str(graphs["int8"]))
    fp32 = og.dequantised_model(int8)
    onnx.checker.check_model(fp32)
    assert not {n.op_type for n in fp32.graph.node} & og._QUANT_OPS
    before, after = og.read_onnx_clip(int8), og.read_onnx_clip(fp32)
    assert not after.quantised and before.tensors.keys() == after.tensors.keys()
    for name, value in before.tensors.items():
        np.testing.assert_array_equal(value, after.tensors[name])


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_a_transposed_square_matrix_loads_strictly_but_fails_the_check(graphs, images, kind):
    import onnx

    model = onnx.load(str(graphs[kind]))
    tower = og.read_onnx_clip(model)
    spec = oi.resolve_spec(tower, "ViT-B-16", CONFIG)
    state = oi.to_open_clip_state(tower)
    qkv = state["transformer.resblocks.0.attn.in_proj_weight"]
    qkv[:64] = qkv[:64].T.clone()  # layer 0's q, [64, 64]: same shape either way
    backbone = oi.load_open_clip(spec, state)
    reference = og.dequantised_model(model) if kind == "int8" else model
    agreement = oi.compare_with_onnxruntime(
        backbone.visual, reference.SerializeToString(), oi.check_pixels(images, 32)
    )
    assert agreement.mean < 0.9
    with pytest.raises(oi.DisagreementError, match="disagree"):
        oi.check_agreement([(agreement, 0.999)])


def test_shared_tensors_of_a_fresh_model_are_read_through_identity(tmp_path, images):
    # A freshly initialised model has equal biases and LayerNorm weights; the exporter keeps one
    # copy and names the others with Identity nodes.
    path = _export(_tiny_clip(perturbed=False), tmp_path / "fresh.onnx")
    report = oi.import_onnx(path, None, images, "ViT-B-16", CONFIG)
    assert report.agreements[0].min > 0.9999


def test_cli_writes_weights_and_prints_cosines(graphs, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    config = json.dumps(CONFIG)
    argv = ["weights", "import-onnx", str(graphs["int8"]), "--arch", "ViT-B-16", "--config", config,
            "--out", str(out), "--max-images", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "13 weight matrices, 13 of them INT8" in printed
    assert "ViT-B-16-quickgelu" in printed and "3 synthetic images" in printed
    assert "dequantised graph: cosine mean" in printed and "as shipped graph: cosine mean" in printed
    assert out.is_file()

    # An unreachable exact threshold stands in for a wrong mapping: exit 2, figures shown, no file.
    bad = tmp_path / "bad.safetensors"
    assert main(argv[:-4] + ["--out", str(bad), "--min-exact-cosine", "1.01"]) == 2
    err = capsys.readouterr().err
    assert "disagree" in err and "Per image: dequantised:" in err and "not written" in err
    assert not bad.exists()


def test_a_low_as_shipped_agreement_is_explained_not_fatal(graphs, tmp_path, capsys, monkeypatch):
    # What a CPU without VNNI does to the real starter graph (cosine mean 0.514 was measured on an
    # AVX2-only EPYC), simulated so that the test holds on every CPU.
    real_compare = oi.compare_with_onnxruntime

    def saturating_int8(visual, graph, pixels, reference="as shipped"):
        agreement = real_compare(visual, graph, pixels, reference)
        if reference == "as shipped":
            return oi.Agreement(reference, tuple(0.5 for _ in agreement.cosines))
        return agreement

    monkeypatch.setattr(oi, "compare_with_onnxruntime", saturating_int8)
    monkeypatch.setattr(oi.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(oi, "has_int8_dot", lambda flags=None: False)
    out = tmp_path / "ok.safetensors"
    argv = ["weights", "import-onnx", str(graphs["int8"]), "--arch", "ViT-B-16",
            "--config", json.dumps(CONFIG), "--out", str(out), "--max-images", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "as shipped graph: cosine mean 0.500000" in printed and "does not decide" in printed
    assert "saturate on x86 CPUs without VNNI" in printed
    assert out.is_file()


def test_the_note_names_the_cause_by_cpu(monkeypatch):
    monkeypatch.setattr(oi.platform, "machine", lambda: "x86_64")
    low = oi.Agreement("as shipped", (0.51, 0.40))
    assert oi.shipped_note(oi.Agreement("as shipped", (0.99,)), 0.95) == ""
    assert "without VNNI" in oi.shipped_note(low, 0.95, frozenset({"avx2"}))
    with_vnni = oi.shipped_note(low, 0.95, frozenset({"avx2", "avx512_vnni"}))
    assert "without VNNI" not in with_vnni and "avx512_vnni" in with_vnni


def test_an_fp32_graph_is_still_judged_against_itself(graphs, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    argv = ["weights", "import-onnx", str(graphs["fp32"]), "--arch", "ViT-B-16",
            "--config", json.dumps(CONFIG), "--out", str(bad), "--max-images", "2",
            "--min-cosine", "1.01"]
    assert main(argv) == 2
    assert "as shipped graph" in capsys.readouterr().err and not bad.exists()


def test_cli_refuses_a_graph_that_does_not_fit_the_arch(graphs, tmp_path, capsys):
    argv = ["weights", "import-onnx", str(graphs["fp32"]), "--out", str(tmp_path / "x.safetensors")]
    assert main(argv) == 2
    assert "does not fit open_clip ViT-B-16-quickgelu" in capsys.readouterr().err


def test_cli_refuses_a_file_that_is_not_onnx(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert main(["weights", "import-onnx", str(junk), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
