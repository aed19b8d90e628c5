"""Adapters: experts stored as what they changed in a pretrained backbone, applied to make a bundle.

A bundle holds every weight (hundreds of MB for ViT-B experts). An expert fine-tuned with
low-rank deltas on a few blocks differs from its pretrained backbone by well under a million
numbers; an adapter file keeps just those, so trained experts can be shipped or committed
without the backbone, whose licence and size are someone else's. Applying it needs the very
backbone weights it was trained from: the digest of the backbone file's tensors
(detector.tensor_digest) is recorded and checked.

One safetensors file. Metadata: "format", "ensemble" (the bundle manifest's expert specs, version,
threshold), "backbone_sha256" (the tensors digest), "provenance". Tensors, per expert name E:
  E::<param>            a tensor replaced whole (heads, biases, norms of the tuned blocks);
  E::<param>::lora_a/b  a low-rank delta: weight = base + lora_b @ lora_a (scale folded in b).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from detector.bundle import BundleError, Manifest, save_bundle, sha256_file
from detector.expert import Expert
from detector.spec import EnsembleSpec, SpecError, expert_from_dict, expert_to_dict
from detector.tensor_digest import state_sha256

FORMAT = "featdistill.adapter/1"
_SEP = "::"


class AdapterError(BundleError):
    """An adapter file that cannot be read or does not fit the backbone it is applied to."""


def tensors_sha256(path: str | Path) -> str:
    """state_sha256 of an open_clip weights file."""
    from open_clip.factory import load_state_dict

    return state_sha256(load_state_dict(str(path)))


def save_adapter(path: str | Path, ensemble: EnsembleSpec,
                 tensors: Sequence[Mapping[str, torch.Tensor]],
                 deltas: Sequence[Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
                 backbone_sha256: str, provenance: dict[str, Any] | None = None) -> Path:
    """tensors[i] / deltas[i]: expert i's whole tensors and its (a, b) low-rank pairs, keyed by
    the expert's state-dict names (head.* or backbone.*)."""
    out: dict[str, torch.Tensor] = {}
    for spec, whole, low in zip(ensemble.experts, tensors, deltas, strict=True):
        for name, t in whole.items():
            out[f"{spec.name}{_SEP}{name}"] = t.detach().float().contiguous().cpu()
        for name, (a, b) in low.items():
            out[f"{spec.name}{_SEP}{name}{_SEP}lora_a"] = a.detach().float().contiguous().cpu()
            out[f"{spec.name}{_SEP}{name}{_SEP}lora_b"] = b.detach().float().contiguous().cpu()
    meta = {"format": FORMAT, "backbone_sha256": backbone_sha256,
            "ensemble": json.dumps({"version": ensemble.version, "threshold": ensemble.threshold,
                                    "experts": [expert_to_dict(e) for e in ensemble.experts]}),
            "provenance": json.dumps(provenance or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path


def read_adapter(path: str | Path) -> tuple[EnsembleSpec, dict[str, dict[str, torch.Tensor]], dict]:
    """(ensemble spec, expert name -> {key: tensor}, metadata) of an adapter file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise AdapterError(f"{path}: not a featdistill adapter (format {meta.get('format')!r})")
            doc = json.loads(meta["ensemble"])
            ensemble = EnsembleSpec(tuple(expert_from_dict(e) for e in doc["experts"]),
                                    float(doc["threshold"]), str(doc["version"]))
            per_expert: dict[str, dict[str, torch.Tensor]] = {e.name: {} for e in ensemble.experts}
            for key in f.keys():
                expert, _, rest = key.partition(_SEP)
                if expert not in per_expert:
                    raise AdapterError(f"{path}: tensor {key!r} names no expert of the adapter")
                per_expert[expert][rest] = f.get_tensor(key)
    except (OSError, SafetensorError, KeyError, ValueError, SpecError) as exc:
        if isinstance(exc, AdapterError):
            raise
        raise AdapterError(f"{path}: cannot read adapter ({exc})") from exc
    return ensemble, per_expert, meta


def apply_adapter(expert: Expert, entries: dict[str, torch.Tensor]) -> None:
    """Load an adapter's entries for one expert (full tensors and low-rank deltas) into it."""
    state = expert.state_dict()
    updates: dict[str, torch.Tensor] = {}
    for key, tensor in entries.items():
        name, _, part = key.partition(_SEP)
        if name not in state:
            raise AdapterError(f"expert {expert.spec.name!r}: adapter names unknown tensor {name!r}")
        if part == "lora_a":
            b = entries.get(f"{name}{_SEP}lora_b")
            if b is None:
                raise AdapterError(f"expert {expert.spec.name!r}: {name} has lora_a but no lora_b")
            delta = b @ tensor
            if delta.shape != state[name].shape:
                raise AdapterError(f"expert {expert.spec.name!r}: delta of {name} is "
                                   f"{tuple(delta.shape)}, the weight {tuple(state[name].shape)}")
            updates[name] = state[name].float() + delta
        elif part == "":
            if tensor.shape != state[name].shape:
                raise AdapterError(f"expert {expert.spec.name!r}: {name} is {tuple(tensor.shape)} "
                                   f"in the adapter, {tuple(state[name].shape)} in the model")
            updates[name] = tensor
    expert.load_state_dict({**state, **updates}, strict=True)


def build_from_adapter(adapter: str | Path, backbone: str | Path, out_dir: str | Path) -> Manifest:
    """Apply an adapter to the open_clip backbone file it was made from and write a full bundle.
    The file is read once: its digest is checked and its weights loaded from the same dict."""
    from open_clip.factory import load_state_dict

    ensemble, per_expert, meta = read_adapter(adapter)
    if any(spec.backbone.backend != "open_clip" for spec in ensemble.experts):
        raise AdapterError(f"{adapter}: adapters apply to open_clip backbone files only")
    state = load_state_dict(str(backbone))
    digest = state_sha256(state)
    if digest != meta.get("backbone_sha256"):
        raise AdapterError(f"{backbone}: weights digest {digest[:12]}... is not the backbone the "
                           f"adapter was trained from ({str(meta.get('backbone_sha256'))[:12]}...)")
    experts = []
    base = None
    for spec in ensemble.experts:
        if base is None or base.spec.backbone != spec.backbone:
            base = Expert.build(spec)
            base.backbone.load_state(state)
        expert = Expert(spec, copy.deepcopy(base.backbone))
        apply_adapter(expert, per_expert[spec.name])
        experts.append(expert.eval())
    provenance = {**json.loads(meta.get("provenance", "{}")),
                  "adapter": {"file": Path(adapter).name, "sha256": sha256_file(Path(adapter)),
                              "backbone_sha256": meta.get("backbone_sha256")}}
    return save_bundle(out_dir, ensemble, experts, provenance)


def combine_adapters(paths: Sequence[str | Path], out: str | Path, version: str,
                     threshold: float) -> Path:
    """One adapter holding the experts of several (all made from the same backbone file)."""
    specs, tensors, deltas, digests, provenance = [], [], [], set(), {}
    for path in paths:
        ensemble, per_expert, meta = read_adapter(path)
        digests.add(meta.get("backbone_sha256"))
        for spec in ensemble.experts:
            entries = per_expert[spec.name]
            specs.append(spec)
            tensors.append({k: v for k, v in entries.items() if _SEP not in k})
            deltas.append({k.rpartition(_SEP)[0]: (v, entries[k.rpartition(_SEP)[0] + _SEP + "lora_b"])
                           for k, v in entries.items() if k.endswith(_SEP + "lora_a")})
            provenance[spec.name] = json.loads(meta.get("provenance", "{}"))
    if len(digests) != 1:
        raise AdapterError("the adapters were made from different backbone files")
    try:
        ensemble = EnsembleSpec(tuple(specs), threshold, version)
    except SpecError as exc:
        raise AdapterError(str(exc)) from exc
    combined: dict[str, Any] = {"experts": provenance}
    datas = [p.get("data") for p in provenance.values()]
    if datas and datas[0] is not None and all(d == datas[0] for d in datas):
        combined["data"] = datas[0]  # one training split for all: `eval --loo` can rebuild it
    return save_adapter(out, ensemble, tensors, deltas, digests.pop(), combined)
