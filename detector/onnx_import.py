"""Turn a CLIP image tower exported to ONNX into open_clip weights, and prove the mapping numerically.

The input is a transformers `CLIPVisionModelWithProjection` export, fp32 or dynamically quantised
by onnxruntime (INT8 weights, activations quantised at run time). Its fp32 tensors keep their
`vision_model.*` names, but the exporter renames every Linear weight (`onnx::MatMul_1541`, stored
transposed as [in, out]) and the quantiser then replaces it with `<name>_quantized`, `_scale` and
`_zero_point`. So a weight's identity comes from the graph: the Add after its matmul reads a named
`*.bias`, or (the bias-free visual projection) its matmul reads post_layernorm's output.

Strict loading catches a missing or misshapen tensor but not a transposed square matrix (q, k, v,
out_proj are all [width, width]); only running both models on the same images does. So the import
ends with that check, cosine of the image embeddings, against two references: the graph as shipped
(INT8 activations hold even an exact conversion to about 0.98), and the same graph rewritten to run
in fp32 on its dequantised weights, which an exact conversion matches to rounding (1.000000 on the
starter file, where one transposed q in one block still scores 0.97 against the INT8 graph).

onnx and onnxruntime are optional dependencies (the `onnx` extra): imported inside functions.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from detector.backbones import OpenClipBackbone
from detector.preprocess import to_batch
from detector.spec import CLIP_MEAN, CLIP_STD, BackboneSpec, PreprocessSpec

# Ops that apply a weight matrix to an activation: input 0 the activation, input 1 the weight.
LINEAR_OPS = frozenset(
    {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)
# Where an op carries its bias as an input rather than in a following Add.
_BIAS_INPUT = {"Gemm": 2, "DynamicQuantizeMatMul": 4, "MatMulIntegerToFloat": 6}
# Between MatMulInteger and the bias Add sit the int32 -> float Cast and the multiply by the scale.
_TO_BIAS = frozenset({"Cast", "Mul"})
# Between a tensor and a quantised matmul reading it sits the run-time activation quantiser.
_FROM_INPUT = frozenset({"DynamicQuantizeLinear", "Cast", "Identity"})
# Graph tensors that are not parameters of the open_clip tower.
_IGNORED = frozenset({"vision_model.embeddings.position_ids"})
_DIM_TENSORS = (
    "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.position_embedding.weight",
    "vision_model.encoder.layers.0.mlp.fc1.weight",
    "visual_projection.weight",
)
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")


class OnnxImportError(ValueError):
    """The graph cannot be read as a CLIP image tower, or does not fit the open_clip architecture."""


class DisagreementError(OnnxImportError):
    """The converted model loads, but its embeddings do not match onnxruntime's: a wrong mapping."""

    def __init__(self, message: str, agreements: tuple["Agreement", ...]) -> None:
        super().__init__(message)
        self.agreements = agreements


@dataclass(frozen=True)
class OnnxClipTower:
    """A CLIP image tower read out of an ONNX graph: transformers names, torch layouts, fp32."""

    tensors: dict[str, np.ndarray]  # Linear weights as [out, in], as in the torch module
    quantised: frozenset[str]  # names of the tensors the graph stored quantised
    linear: frozenset[str]  # names of the weights found as matmul operands
    activation: str  # "quick_gelu" or "gelu", from the ops of the MLP

    @property
    def layers(self) -> int:
        found = {int(m.group(1)) for name in self.tensors if (m := _LAYER.match(name))}
        return max(found) + 1 if found else 0

    def dims(self) -> dict[str, int]:
        """The architecture as far as the weights tell it (head count is not in any shape)."""
        missing = sorted(set(_DIM_TENSORS) - set(self.tensors))
        if missing:
            raise OnnxImportError(
                f"the graph has no tensor {missing[0]}: not a transformers CLIP image tower"
            )
        t = self.tensors
        width = t["vision_model.embeddings.class_embedding"].shape[0]
        patch = t["vision_model.embeddings.patch_embedding.weight"].shape[-1]
        grid = math.isqrt(t["vision_model.embeddings.position_embedding.weight"].shape[0] - 1)
        return {
            "width": int(width),
            "layers": self.layers,
            "patch_size": int(patch),
            "image_size": int(grid * patch),
            "mlp_width": int(t["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "embed_dim": int(t["visual_projection.weight"].shape[0]),
        }


def param_name(tensor: str) -> str | None:
    """`/m.vision_model.x.weight_quantized` -> `vision_model.x.weight`; None for anonymous tensors."""
    if tensor.endswith("_quantized"):
        tensor = tensor[: -len("_quantized")]
    for root in ("vision_model.", "visual_projection."):
        at = tensor.find(root)
        if at == 0 or (at > 0 and tensor[at - 1] in "./:"):
            return tensor[at:]
    return None


class _Graph:
    """Constant lookup and one-step navigation over an onnx GraphProto."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.nodes = list(graph.node)
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for name in n.input:
                self.consumers[name].append(n)
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits.setdefault(n.output[0], numpy_helper.to_array(n.attribute[0].t))

    def const(self, name: str, axis: int | None = None) -> np.ndarray | None:
        """The value of a constant tensor, through Identity and dequantisation; None if not constant.

        A `<x>_quantized` initializer is dequantised with onnxruntime's `<x>_scale` and
        `<x>_zero_point`. A per-channel scale is laid along `axis`, or along the one axis of that
        length when no axis is given.
        """
        name = self.source(name)
        if name not in self.inits:
            return None
        value = self.inits[name]
        if not name.endswith("_quantized"):
            return value
        base = name[: -len("_quantized")]
        scale, zero = self.inits.get(base + "_scale"), self.inits.get(base + "_zero_point")
        if scale is None or zero is None:
            raise OnnxImportError(f"quantised tensor {name!r} has no {base}_scale / _zero_point")
        return _dequantise(name, value, scale, zero, axis)

    def source(self, name: str) -> str:
        """The tensor behind a chain of Identity nodes (the exporter's stand-in for shared values)."""
        while name not in self.inits and getattr(self.producer.get(name), "op_type", "") == "Identity":
            name = self.producer[name].input[0]
        return name

    def single_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


def _dequantise(name: str, q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int | None):
    shape: list[int] = []  # a per-tensor scale broadcasts as a scalar
    if scale.size > 1:
        if axis is None:
            axes = [i for i, n in enumerate(q.shape) if n == scale.size]
            if len(axes) != 1:
                raise OnnxImportError(f"cannot tell which axis of {name!r} {list(q.shape)} is scaled")
            axis = axes[0]
        shape = [1] * q.ndim
        shape[axis] = scale.size
    s = scale.astype(np.float32).reshape(shape)
    z = zero.astype(np.float32).reshape(shape)
    return (q.astype(np.float32) - z) * s


def _linear_weight(g: _Graph, node) -> tuple[np.ndarray, str] | None:
    """A linear node's weight as torch's [out, in], and the initializer holding it; None if none."""
    name, transposes = node.input[1], 0
    while name in g.producer and g.producer[name].op_type == "Transpose":
        name, transposes = g.producer[name].input[0], transposes + 1
    # MatMul's right operand is [in, out] (flipped by transB or a Transpose); a quantised weight
    # has one scale per output, the only per-channel scale that can be applied after the matmul.
    flipped = (transposes + next((a.i for a in node.attribute if a.name == "transB"), 0)) % 2
    w = g.const(name, axis=0 if flipped else 1)
    if w is None or w.ndim != 2:
        return None
    return np.ascontiguousarray(w if flipped else w.T), name


def _linear_name(g: _Graph, node, weight_tensor: str) -> str:
    """Which Linear this is: its own name, else the named bias it feeds, else post_layernorm's reader."""
    own = param_name(weight_tensor)
    if own is not None and own.endswith(".weight"):
        return own
    at = _BIAS_INPUT.get(node.op_type)
    if at is not None and len(node.input) > at and node.input[at]:
        bias = param_name(node.input[at])
        if bias and bias.endswith(".bias"):
            return bias[: -len("bias")] + "weight"
    out = node.output[0]
    for _ in range(4):
        nxt = g.single_consumer(out)
        if nxt is None:
            break
        if nxt.op_type == "Add":
            other = next((i for i in nxt.input if i != out), "")
            bias = param_name(other)
            if bias and bias.endswith(".bias") and g.const(other) is not None:
                return bias[: -len("bias")] + "weight"
            break
        if nxt.op_type not in _TO_BIAS:
            break
        out = nxt.output[0]
    src = node.input[0]
    while src in g.producer and g.producer[src].op_type in _FROM_INPUT:
        src = g.producer[src].input[0]
    reads = g.producer[src].input if src in g.producer else []
    if any(param_name(i) == "vision_model.post_layernorm.bias" for i in reads):
        return "visual_projection.weight"
    raise OnnxImportError(
        f"cannot tell which layer the weight {weight_tensor!r} belongs to: no named bias follows "
        f"its {node.op_type} and it does not read post_layernorm's output"
    )


def _activation(g: _Graph) -> str:
    ops = {n.op_type for n in g.nodes}
    if ops & {"Sigmoid", "QuickGelu"}:  # QuickGELU: x * sigmoid(1.702 x), or onnxruntime's fused op
        return "quick_gelu"
    if ops & {"Erf", "Gelu"}:
        return "gelu"
    raise OnnxImportError("cannot find the MLP activation (no Sigmoid, Erf or Gelu op)")


def read_onnx_clip(model: Any) -> OnnxClipTower:
    """Read a transformers CLIP image tower out of an onnx ModelProto (fp32 or INT8)."""
    g = _Graph(model.graph)
    tensors: dict[str, np.ndarray] = {}
    quantised: set[str] = set()
    linear: set[str] = set()
    for node in g.nodes:
        found = _linear_weight(g, node) if node.op_type in LINEAR_OPS else None
        if found is None:
            continue
        w, tensor = found
        name = _linear_name(g, node, tensor)
        if name in tensors:
            raise OnnxImportError(f"two matmuls map to {name} (the second reads {tensor!r})")
        tensors[name] = w
        linear.add(name)
        if tensor.endswith("_quantized"):
            quantised.add(name)
    named = set(g.inits) | {out for n in g.nodes if n.op_type == "Identity" for out in n.output}
    for tensor in sorted(named):
        name = param_name(tensor)
        if name is None or name in linear or name in _IGNORED:
            continue
        if tensor.endswith(("_scale", "_zero_point")):
            continue
        value = g.const(tensor)
        if value is None:
            continue
        tensors[name] = value.astype(np.float32)
        if g.source(tensor).endswith("_quantized"):
            quantised.add(name)
    return OnnxClipTower(tensors, frozenset(quantised), frozenset(linear), _activation(g))


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


# onnxruntime's dynamic quantisation: what `dequantised_model` can undo, and what else it would leave.
_QUANT_OPS = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DequantizeLinear", "QuantizeLinear",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv",
})


def _fp32_name(name: str) -> str:
    # The quantiser's `<x>_quantized` goes back to `<x>`, so the result reads as an fp32 export.
    return name[: -len("_quantized")] if name.endswith("_quantized") else name + "_fp32"


def dequantised_model(model: Any) -> Any | None:
    """The same graph computing in fp32 on its dequantised weights: its wiring without its rounding.

    INT8 activations put a floor of about 0.97 under the cosine of even a perfect conversion, and a
    single transposed matrix in one block can hide above that floor; against this graph a correct
    conversion scores about 1. Undoes onnxruntime's dynamic quantisation (DynamicQuantizeLinear ->
    MatMulInteger or ConvInteger -> Cast -> Mul, and DequantizeLinear after a Gather on a quantised
    table); returns None for a graph quantised any other way.
    """
    from onnx import helper, numpy_helper

    g = _Graph(model.graph)
    swap: dict[int, Any] = {}  # id(node) -> its replacement, or None to drop it
    added = []
    for node in g.nodes:
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            dql = g.producer.get(node.input[0])
            cast = g.single_consumer(node.output[0])
            is_cast = cast is not None and cast.op_type == "Cast"
            mul = g.single_consumer(cast.output[0]) if is_cast else None
            weight = g.const(node.input[1], axis=1 if node.op_type == "MatMulInteger" else 0)
            if dql is None or dql.op_type != "DynamicQuantizeLinear" or mul is None or weight is None:
                return None
            added.append(numpy_helper.from_array(weight, _fp32_name(node.input[1])))
            op = node.op_type[: -len("Integer")]  # MatMul, Conv
            fp32 = helper.make_node(op, [dql.input[0], added[-1].name], [mul.output[0]])
            fp32.attribute.extend(node.attribute)  # a Conv's kernel, strides, pads
            swap.update({id(node): fp32, id(cast): None, id(mul): None})
        elif node.op_type == "DequantizeLinear":
            gather = g.producer.get(node.input[0])
            is_gather = gather is not None and gather.op_type == "Gather"
            table = g.const(gather.input[0]) if is_gather else None
            if table is None:
                return None
            added.append(numpy_helper.from_array(table, _fp32_name(gather.input[0])))
            fp32 = helper.make_node("Gather", [added[-1].name, gather.input[1]], [node.output[0]])
            fp32.attribute.extend(gather.attribute)
            swap.update({id(gather): fp32, id(node): None})
    nodes = [swap.get(id(n), n) for n in g.nodes if swap.get(id(n), n) is not None]
    wanted = {o.name for o in model.graph.output}
    while True:  # drop what fed only the replaced ops: the activation quantisers, the scale products
        used = wanted | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    if any(n.op_type in _QUANT_OPS for n in nodes):
        return None
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes, model.graph.name, list(model.graph.input), list(model.graph.output),
        [t for t in model.graph.initializer if t.name in used] + added,
    )
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


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

    Two references: the graph as shipped (mean cosine >= `threshold`; INT8 costs a few hundredths)
    and, for a quantised graph, the same graph on its dequantised weights (>= `exact_threshold`).
    Raises OnnxImportError (DisagreementError for a failed check) and then writes nothing.
    `out=None` converts and checks only.
    """
    import onnx

    if not images:
        raise OnnxImportError("the numeric check needs at least one image")
    onnx_path, start = Path(onnx_path), time.perf_counter()
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # DecodeError, OSError, ...: whatever says "not an ONNX model"
        raise OnnxImportError(
            f"{onnx_path} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from exc
    tower = read_onnx_clip(model)
    spec = resolve_spec(tower, arch, config)
    state = to_open_clip_state(tower)
    backbone = load_open_clip(spec, state)
    exact = dequantised_model(model) if tower.quantised else None
    del model
    seconds = {"convert": time.perf_counter() - start}

    pixels = check_pixels(images, tower.dims()["image_size"])
    checks = [(compare_with_onnxruntime(backbone.visual, onnx_path, pixels), threshold)]
    if exact is not None:
        exact_bytes = exact.SerializeToString()
        del exact
        agreement = compare_with_onnxruntime(backbone.visual, exact_bytes, pixels, "dequantised")
        checks.insert(0, (agreement, exact_threshold))
    seconds["check"] = time.perf_counter() - start - seconds["convert"]
    check_agreement(checks)
    if out is not None:
        meta = {
            "source": onnx_path.name,
            "open_clip_model": spec.model,
            "open_clip_config": json.dumps(spec.config, sort_keys=True),
        }
        for a, _ in checks:  # provenance: how closely this file reproduces the graph
            key = "onnxruntime_cosine_" + a.reference.replace(" ", "_")
            meta[key] = json.dumps([round(c, 6) for c in a.cosines])
        save_open_clip(state, Path(out), meta)
    seconds["total"] = time.perf_counter() - start
    return ImportReport(
        spec=spec,
        dims=tower.dims(),
        activation=tower.activation,
        linear=len(tower.linear),
        quantised_linear=len(tower.quantised & tower.linear),
        quantised=len(tower.quantised),
        params=sum(v.numel() for v in state.values()),
        agreements=tuple(a for a, _ in checks),
        seconds=seconds,
    )
