"""Batched inference: images in, one Score per image out.

Work is grouped per expert: each distinct preprocessing is applied once per image (experts that
share a backbone family share their input tensors), then each expert runs over the batch in
chunks. The verdict is the plain mean of the experts' P(fake), as in the paper; each expert's own
probability is kept in the Score.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from detector.bundle import Manifest, load_experts, read_manifest
from detector.expert import Expert, param_bytes
from detector.preprocess import to_batch
from detector.spec import EnsembleSpec

AI_GENERATED = "ai_generated"
REAL = "real"
UNCERTAIN = "uncertain"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Score:
    score: float  # mean P(AI-generated) over the experts
    label: str  # AI_GENERATED if score >= threshold else REAL
    experts: dict[str, float]  # each expert's own P(AI-generated)
    spread: float  # max - min of the experts' probabilities: how much they disagree
    model_version: str


def label_for(score: float, threshold: float, spread: float = 0.0, max_spread: float | None = None) -> str:
    """The verdict label; UNCERTAIN when the experts disagree by more than max_spread."""
    if max_spread is not None and spread > max_spread:
        return UNCERTAIN
    return AI_GENERATED if score >= threshold else REAL


def trunk_groups(experts: Sequence[Expert]) -> list[list[int]]:
    """Indices of experts grouped so that each group's members share their first blocks.

    Experts declaring `shared_blocks` join a group when backbone spec, preprocessing and the
    trunk weights themselves are identical; their trunk modules are then the leader's (held in
    memory once). Anything else stands alone.
    """
    groups: list[list[int]] = []
    for i, expert in enumerate(experts):
        n = expert.spec.shared_blocks
        for group in groups if n > 0 else []:
            leader = experts[group[0]]
            if (leader.spec.shared_blocks, leader.spec.backbone, leader.spec.preprocess) == (
                n, expert.spec.backbone, expert.spec.preprocess
            ) and _same_tensors(leader.backbone.trunk_modules(n), expert.backbone.trunk_modules(n)):
                expert.backbone.share_trunk_with(leader.backbone, n)
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _same_tensors(a, b) -> bool:
    def tensors(mods):
        for m in mods:
            yield from ([m] if isinstance(m, torch.Tensor) else m.state_dict().values())

    pairs = list(zip(tensors(a), tensors(b)))
    return len(pairs) > 0 and all(x.shape == y.shape and torch.equal(x, y) for x, y in pairs)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Detector:
    def __init__(
        self,
        spec: EnsembleSpec,
        experts: Sequence[Expert],
        device: str | torch.device | None = "cpu",
        dtype: str | None = None,
        batch_size: int = 32,
        digest: str = "",
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        # Autocast in reduced precision on CUDA only; on CPU, fp32 is both exact and fastest.
        name = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        if name not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
        self.dtype = _DTYPES[name]
        self.experts = [e.to(self.device).eval() for e in experts]
        self.groups = trunk_groups(self.experts)
        self.batch_size = batch_size
        self.digest = digest

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        device: str | torch.device | None = "cpu",
        dtype: str | None = None,
        batch_size: int = 32,
    ) -> "Detector":
        manifest: Manifest = read_manifest(bundle_dir)
        experts = load_experts(bundle_dir, manifest)
        return cls(manifest.ensemble, experts, device, dtype, batch_size, manifest.digest)

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def param_bytes(self) -> int:
        return sum(param_bytes(e) for e in self.experts)

    def peak_memory_bytes(self) -> int | None:
        """Peak CUDA memory allocated since load or the last reset; None off CUDA."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device))

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return nullcontext()

    @torch.inference_mode()
    def expert_probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(num_experts, num_images) P(fake), computed expert by expert over the whole batch;
        experts sharing a trunk run it once per chunk."""
        probs = torch.empty(len(self.experts), len(images))
        inputs: dict = {}  # PreprocessSpec -> (N, 3, S, S) tensor, shared between experts
        for group in self.groups:
            leader = self.experts[group[0]]
            pre, shared = leader.spec.preprocess, leader.spec.shared_blocks
            if pre not in inputs:
                inputs[pre] = to_batch(images, pre)
            for start in range(0, len(images), self.batch_size):
                chunk = inputs[pre][start : start + self.batch_size].to(self.device, non_blocking=True)
                with self._autocast():
                    hidden = leader.backbone.forward_trunk(chunk, shared) if shared else None
                    for i in group:
                        expert = self.experts[i]
                        if hidden is None:
                            logits, _ = expert(chunk)
                        else:
                            feature = expert.backbone.forward_tail(hidden, shared, expert.spec.feature)
                            logits = expert.head(feature)
                        probs[i, start : start + len(chunk)] = Expert.prob_fake(logits).cpu()
        return probs

    def predict(self, images: Sequence[Image.Image]) -> list[Score]:
        if not images:
            return []
        probs = self.expert_probabilities(images)
        means = probs.mean(dim=0)
        spreads = probs.max(dim=0).values - probs.min(dim=0).values
        names = [e.spec.name for e in self.experts]
        scores = []
        for j in range(len(images)):
            score = float(means[j])
            scores.append(
                Score(
                    score=score,
                    label=label_for(score, self.threshold),
                    experts={n: float(probs[i, j]) for i, n in enumerate(names)},
                    spread=float(spreads[j]),
                    model_version=self.version,
                )
            )
        return scores
