"""Read a CLIP image tower out of an ONNX graph (convert.onnx_import turns it into open_clip).

The graph is a transformers `CLIPVisionModelWithProjection` export, fp32 or dynamically quantised
by onnxruntime. Its fp32 tensors keep their `vision_model.*` names, but the exporter renames every
Linear weight (`onnx::MatMul_1541`, stored transposed as [in, out]) and the quantiser then replaces
it with `<name>_quantized`, `_scale` and `_zero_point`. So a weight's identity comes from the
graph: the Add after its matmul reads a named `*.bias`, or (the bias-free visual projection) its
matmul reads post_layernorm's output. `read_onnx_clip` returns the tensors under their
transformers names, in torch layouts and fp32; `dequantised_model` rewrites a quantised graph to
run in fp32 on its dequantised weights (the exact reference of the numeric check).

onnx is an optional dependency (the `onnx` extra): imported inside functions.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

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
