"""Turn a CLIP image tower exported to ONNX into open_clip weights, and prove the mapping numerically.

The input is a transformers `CLIPVisionModelWithProjection` export, fp32 or dynamically quantised
by onnxruntime (INT8 weights, activations quantised at run time). Its fp32 tensors keep their
`vision_model.*` names, but the exporter renames every Linear weight (`onnx::MatMul_1541`, stored
transposed as [in, out]) and the quantiser then replaces it with `<name>_quantized`, `_scale` and
`_zero_point`. So a weight's identity comes from the graph: the Add after its matmul reads a named
`*.bias`, or (the bias-free visual projection) its matmul reads post_layernorm's output.

Strict loading catches a missing or misshapen tensor but not a transposed square matrix (q, k, v,
out_proj are all [width, width]); only running both models on the same images does. So the import
ends with that check, cosine of the image embeddings. For a quantised graph the reference that
decides is the same graph rewritten to run in fp32 on its dequantised weights, which an exact
conversion matches to rounding (1.000000 on the starter file, where one transposed q in one block
still scores 0.97 against the INT8 graph). The graph as shipped is measured too but never decides:
its INT8 activations hold even an exact conversion to about 0.98 on a CPU with VNNI, and to about
0.5 on x86 CPUs without it, where onnxruntime's u8s8 matrix products saturate.

Reading the graph (which weight is which, dequantising, the fp32 rewrite of a quantised graph) is
convert/onnx_graph.py; this module maps its tensors to open_clip, loads them, runs the check and
writes the file.

onnx and onnxruntime are optional dependencies (the `onnx` extra): imported inside functions.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from convert.onnx_graph import OnnxClipTower, OnnxImportError, dequantised_model, read_onnx_clip
from detector.backbones import OpenClipBackbone
from detector.cpu import describe, has_int8_dot
from detector.preprocess import to_batch
from detector.spec import CLIP_MEAN, CLIP_STD, BackboneSpec, PreprocessSpec


class DisagreementError(OnnxImportError):
    """The converted model loads, but its embeddings do not match onnxruntime's: a wrong mapping."""

    def __init__(self, message: str, agreements: tuple["Agreement", ...]) -> None:
        super().__init__(message)
        self.agreements = agreements


def to_open_clip_state(tower: OnnxClipTower) -> dict[str, torch.Tensor]:
    """transformers CLIPVisionModelWithProjection names -> open_clip VisionTransformer names."""
    left = dict(tower.tensors)

    def take(name: str) -> np.ndarray:
        try:
            return left.pop(name)
        except KeyError:
            raise OnnxImportError(f"the graph has no tensor {name}") from None

    v = "vision_model."
    state = {
        "class_embedding": take(v + "embeddings.class_embedding"),
        "positional_embedding": take(v + "embeddings.position_embedding.weight"),
        "conv1.weight": take(v + "embeddings.patch_embedding.weight"),
        "ln_pre.weight": take(v + "pre_layrnorm.weight"),
        "ln_pre.bias": take(v + "pre_layrnorm.bias"),
        "ln_post.weight": take(v + "post_layernorm.weight"),
        "ln_post.bias": take(v + "post_layernorm.bias"),
        "proj": take("visual_projection.weight").T,  # open_clip applies x @ proj
    }
    for i in range(tower.layers):
        hf, oc = f"{v}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        # nn.MultiheadAttention packs q, k, v row-wise into one in_proj.
        for kind in ("weight", "bias"):
            qkv = [take(f"{hf}self_attn.{p}_proj.{kind}") for p in "qkv"]
            state[f"{oc}attn.in_proj_{kind}"] = np.concatenate(qkv)
        pairs = {
            "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
        }
        for ours, theirs in pairs.items():
            for kind in ("weight", "bias"):
                state[f"{oc}{ours}.{kind}"] = take(f"{hf}{theirs}.{kind}")
    if left:
        raise OnnxImportError(f"the graph has tensors with no open_clip place: {sorted(left)[:5]}")
    return {k: torch.tensor(a, dtype=torch.float32) for k, a in state.items()}  # copies: no aliasing


def resolve_spec(tower: OnnxClipTower, arch: str, config: dict[str, Any] | None = None) -> BackboneSpec:
    """The open_clip architecture to build: `arch` with the graph's MLP activation, checked against
    the graph's shapes.

    transformers CLIP runs QuickGELU; open_clip's plain `ViT-B-16` runs exact GELU, loads the same
    weights strictly and quietly scores lower, so a QuickGELU graph selects `<arch>-quickgelu`
    (or sets `quick_gelu` when open_clip has no such config).
    """
    import open_clip

    from detector.backbones import deep_merge

    config = {k: v for k, v in (config or {}).items() if k != "quick_gelu"}  # the graph decides
    quick = tower.activation == "quick_gelu"
    if open_clip.get_model_config(arch) is None and not config:
        raise OnnxImportError(f"open_clip has no model config named {arch!r}")
    base = open_clip.get_model_config(arch) or {}
    if bool(deep_merge(base, config).get("quick_gelu", False)) != quick:
        sibling = arch + "-quickgelu" if quick else arch.removesuffix("-quickgelu")
        if sibling != arch and open_clip.get_model_config(sibling) is not None:
            arch, base = sibling, open_clip.get_model_config(sibling)
        else:
            config["quick_gelu"] = quick
    cfg = deep_merge(base, config)
    vision = cfg.get("vision_cfg", {})
    expected = {
        "width": vision.get("width"),
        "layers": vision.get("layers"),
        "patch_size": vision.get("patch_size"),
        "image_size": vision.get("image_size"),
        "mlp_width": int(vision.get("width", 0) * vision.get("mlp_ratio", 4.0)),
        "embed_dim": cfg.get("embed_dim"),
    }
    found = tower.dims()
    wrong = [f"{k} {found[k]} (open_clip {arch}: {v})" for k, v in expected.items() if found[k] != v]
    if wrong:
        raise OnnxImportError(f"the graph does not fit open_clip {arch}: it has " + ", ".join(wrong))
    return BackboneSpec("open_clip", arch, config)


def load_open_clip(spec: BackboneSpec, state: dict[str, torch.Tensor]) -> OpenClipBackbone:
    """Build the open_clip tower and load the converted state strictly (every key, every shape)."""
    backbone = OpenClipBackbone(spec)
    try:
        backbone.visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise OnnxImportError(f"the converted weights do not load into {spec.model}: {exc}") from exc
    return backbone.eval()


@dataclass(frozen=True)
class Agreement:
    """Per-image cosine similarity between open_clip's and onnxruntime's image embeddings."""

    reference: str  # which graph: "as shipped" or "dequantised"
    cosines: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.cosines))

    @property
    def min(self) -> float:
        return float(np.min(self.cosines))

    def summary(self) -> str:
        return f"{self.reference} graph: cosine mean {self.mean:.6f}, min {self.min:.6f}"


def onnx_embeddings(graph: Path | bytes, pixels: np.ndarray) -> np.ndarray:
    """The graph's `image_embeds` (or its first [B, D] output) for these pixels, on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the quantiser's graphs make onnxruntime chatty at load
    source = graph if isinstance(graph, bytes) else str(graph)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    out = next((o for o in outputs if o.name == "image_embeds"), None)
    out = out or next(o for o in outputs if len(o.shape) == 2)
    name = session.get_inputs()[0].name
    # One image at a time: the same arithmetic as a batch, and it also runs a fixed-batch export.
    rows = [session.run([out.name], {name: pixels[i:i + 1]})[0] for i in range(len(pixels))]
    return np.concatenate(rows)


def compare_with_onnxruntime(
    visual: torch.nn.Module, graph: Path | bytes, pixels: torch.Tensor, reference: str = "as shipped"
) -> Agreement:
    """Run the converted tower and an ONNX graph (a path or serialised) on the same pixels."""
    with torch.no_grad():
        ours = visual.eval()(pixels.float()).numpy()
    theirs = onnx_embeddings(graph, pixels.numpy().astype(np.float32))
    num = (ours * theirs).sum(axis=1)
    den = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1) + 1e-12
    return Agreement(reference, tuple(float(c) for c in num / den))


def check_agreement(checks: Sequence[tuple[Agreement, float]]) -> None:
    """Raise DisagreementError, naming every figure, unless each mean reaches its threshold."""
    # `not >=` so that a NaN fails too.
    failed = [f"{a.summary()} (need a mean >= {bar})" for a, bar in checks if not a.mean >= bar]
    if failed:
        raise DisagreementError(
            f"open_clip and onnxruntime disagree on the {'; '.join(failed)}: a matrix is transposed "
            "or swapped, or the architecture differs (head count, activation)",
            tuple(a for a, _ in checks),
        )


def shipped_note(shipped: Agreement, threshold: float, flags: frozenset[str] | None = None) -> str:
    """Why an INT8 graph run as shipped agrees less than `threshold` with an exact conversion."""
    if shipped.mean >= threshold:
        return ""
    head = (f"the INT8 graph as shipped agrees at cosine mean {shipped.mean:.3f} (below "
            f"{threshold}); the conversion itself passed the exact check, so this is the INT8 "
            "graph's own arithmetic")
    if platform.machine().lower() in ("x86_64", "amd64") and not has_int8_dot(flags):
        return (f"{head}: onnxruntime's dynamically quantised u8s8 matrix products saturate on x86 "
                f"CPUs without VNNI, and this one has none ({describe(flags)})")
    return f"{head}: its activation rounding differs from fp32 more than usual on this CPU ({describe(flags)})"


def check_pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """CLIP's own preprocessing: shortest side to `size`, centre crop, CLIP mean and std."""
    spec = PreprocessSpec(size=size, resize_mode="shortest", crop=True, mean=CLIP_MEAN, std=CLIP_STD)
    return to_batch(images, spec)


@dataclass(frozen=True)
class ImportReport:
    spec: BackboneSpec  # what to build to load the written file
    dims: dict[str, int]
    activation: str
    linear: int  # weight matrices found as matmul operands
    quantised_linear: int  # of those, stored INT8 and dequantised
    quantised: int  # all tensors stored quantised (the quantiser may take a Conv or Gather too)
    params: int
    agreements: tuple[Agreement, ...]  # the dequantised graph first, when there is one
    seconds: dict[str, float]
    note: str = ""  # why the as-shipped agreement of an INT8 graph is low, when it is


def save_open_clip(state: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """Vision-tower keys under `visual.`, as in an open_clip CLIP checkpoint; written atomically."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file({f"visual.{k}": v.contiguous() for k, v in state.items()}, str(partial), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o666 & ~umask)  # safetensors creates the file 0600; a cache may be shared
    partial.replace(out)


def _load_onnx(onnx_path: Path):
    import onnx

    try:
        return onnx.load(str(onnx_path))
    except Exception as exc:  # DecodeError, OSError, ...: whatever says "not an ONNX model"
        raise OnnxImportError(
            f"{onnx_path} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from exc


def _provenance(onnx_path: Path, spec, agreements) -> dict[str, str]:
    """The converted file's metadata: its source and how closely it reproduces the graph."""
    meta = {
        "source": onnx_path.name,
        "open_clip_model": spec.model,
        "open_clip_config": json.dumps(spec.config, sort_keys=True),
    }
    for a in agreements:
        key = "onnxruntime_cosine_" + a.reference.replace(" ", "_")
        meta[key] = json.dumps([round(c, 6) for c in a.cosines])
    return meta


def import_onnx(
    onnx_path: str | Path,
    out: str | Path | None,
    images: Sequence[Image.Image],
    arch: str = "ViT-B-16",
    config: dict[str, Any] | None = None,
    threshold: float = 0.95,
    exact_threshold: float = 0.999,
) -> ImportReport:
    """Convert, load strictly, compare with onnxruntime on `images`, write `out` only if they agree.

    The check that decides: for a quantised graph, the same graph on its dequantised weights
    (mean cosine >= `exact_threshold`); otherwise the graph itself (>= `threshold`). A quantised
    graph's agreement as shipped is measured and reported, never decisive: onnxruntime's INT8
    kernels give CPU-dependent results (`shipped_note`).
    Raises OnnxImportError (DisagreementError for a failed check) and then writes nothing.
    `out=None` converts and checks only.
    """
    if not images:
        raise OnnxImportError("the numeric check needs at least one image")
    onnx_path, start = Path(onnx_path), time.perf_counter()
    model = _load_onnx(onnx_path)
    tower = read_onnx_clip(model)
    spec = resolve_spec(tower, arch, config)
    state = to_open_clip_state(tower)
    backbone = load_open_clip(spec, state)
    exact = dequantised_model(model) if tower.quantised else None
    del model
    seconds = {"convert": time.perf_counter() - start}

    pixels = check_pixels(images, tower.dims()["image_size"])
    shipped = compare_with_onnxruntime(backbone.visual, onnx_path, pixels)
    has_exact = exact is not None
    if not has_exact:  # fp32, or quantised in a way we cannot undo: the graph itself decides
        decisive, agreements = (shipped, threshold), (shipped,)
    else:
        # The dequantised graph decides: it is the same wiring computed exactly, so the result
        # does not depend on the CPU. The INT8 graph's own output does (see shipped_note).
        exact_bytes = exact.SerializeToString()
        del exact
        dequantised = compare_with_onnxruntime(backbone.visual, exact_bytes, pixels, "dequantised")
        decisive, agreements = (dequantised, exact_threshold), (dequantised, shipped)
    seconds["check"] = time.perf_counter() - start - seconds["convert"]
    check_agreement([decisive])
    note = shipped_note(shipped, threshold) if has_exact else ""
    if out is not None:
        save_open_clip(state, Path(out), _provenance(onnx_path, spec, agreements))
    seconds["total"] = time.perf_counter() - start
    return ImportReport(
        spec=spec,
        dims=tower.dims(),
        activation=tower.activation,
        linear=len(tower.linear),
        quantised_linear=len(tower.quantised & tower.linear),
        quantised=len(tower.quantised),
        params=sum(v.numel() for v in state.values()),
        agreements=agreements,
        seconds=seconds,
        note=note,
    )
