"""Batched inference: images in, one Score per image out.

Work is grouped per expert: each distinct preprocessing is applied once per image (experts that
share a backbone family share their input tensors), then each expert runs over the batch in
chunks. The verdict is the plain mean of the experts' P(fake), as in the paper; each expert's own
probability is kept in the Score. With test-time augmentation (`tta` views, detector.preprocess.
TTA_VIEWS) each expert's P(fake) is first the mean over the views of the image.

`prepare` + `predict_prepared` split `predict` in two: the per-image preprocessing (thread-safe,
no model involved) can run where the images are decoded, and the batch step only stacks uint8
tensors, normalises them on the device and runs the forward (detector.prepared).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from detector.bundle import Manifest, load_experts, read_manifest
from detector.expert import Expert, param_bytes
from detector.precision import autocast, resolve_precision
from detector.prepared import Prepared, normalised, uint8_views
from detector.preprocess import check_views, decode_side, to_batch
from detector.spec import EnsembleSpec, PreprocessSpec
from detector.tensor_digest import state_sha256

AI_GENERATED = "ai_generated"
REAL = "real"
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Score:
    score: float  # mean P(AI-generated) over the experts
    label: str  # label_for(score, threshold, spread, uncertain_spread)
    experts: dict[str, float]  # each expert's own P(AI-generated)
    spread: float  # max - min of the experts' probabilities: how much they disagree
    model_version: str


def label_for(score: float, threshold: float, spread: float = 0.0, max_spread: float | None = None) -> str:
    """The one label rule (the worker's verdicts and `featdistill detect`): UNCERTAIN when the
    experts' P(fake) spread exceeds max_spread, else AI_GENERATED at or above the threshold."""
    if max_spread is not None and spread > max_spread:
        return UNCERTAIN
    return AI_GENERATED if score >= threshold else REAL


def trunk_groups(experts: Sequence[Expert]) -> list[list[int]]:
    """Indices of experts grouped so that each group's members share their first blocks.

    Experts declaring `shared_blocks` join a group when backbone spec, preprocessing and the
    trunk weights themselves (the stem and first blocks, as the backbone names its parts) are
    identical; their trunk modules are then the leader's (held in memory once). Anything else
    stands alone.
    """
    groups: list[list[int]] = []
    digests: dict[int, str] = {}  # expert index -> digest of its trunk, computed once

    def trunk_digest(i: int) -> str:
        if i not in digests:
            digests[i] = state_sha256(experts[i].backbone.trunk_state(experts[i].spec.shared_blocks))
        return digests[i]

    for i, expert in enumerate(experts):
        n = expert.spec.shared_blocks
        for group in groups if n > 0 else []:
            leader = experts[group[0]]
            if (leader.spec.shared_blocks, leader.spec.backbone, leader.spec.preprocess) == (
                n, expert.spec.backbone, expert.spec.preprocess
            ) and trunk_digest(group[0]) == trunk_digest(i):
                expert.backbone.share_trunk_with(leader.backbone, n)
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


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
        tta: int = 1,
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        # `auto`: bf16 on CUDA, fp32 on CPU whatever the CPU; `fast` adds bf16 on CPUs that have
        # it natively (detector/precision.py).
        self.dtype = resolve_precision(dtype, self.device)
        # Grouped before the move: a shared trunk then goes to the device once.
        self.groups = trunk_groups(experts)
        self.experts = [e.to(self.device).eval() for e in experts]
        self.batch_size = batch_size
        self.digest = digest
        self.tta = check_views(tta)  # views averaged per image; 1 = the plain pipeline

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        device: str | torch.device | None = "cpu",
        dtype: str | None = None,
        batch_size: int = 32,
        tta: int = 1,
    ) -> "Detector":
        manifest: Manifest = read_manifest(bundle_dir)
        experts = load_experts(bundle_dir, manifest)
        return cls(manifest.ensemble, experts, device, dtype, batch_size, manifest.digest, tta)

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
        return autocast(self.dtype, self.device)

    @property
    def preprocess_specs(self) -> list[PreprocessSpec]:
        """The distinct input pipelines of the experts, in first-use order."""
        return list(dict.fromkeys(e.spec.preprocess for e in self.experts))

    @property
    def decode_side(self) -> int:
        """The short side images may be reduced to at decode (detector.images.decode_image's
        min_side) for the scores to stay those of the full image: 2x the largest input."""
        return decode_side(self.preprocess_specs)

    @torch.no_grad()  # not inference_mode: it made CPU bf16 autocast 3x slower (measured)
    def expert_probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(num_experts, num_images) P(fake), each the mean over the image's `tta` views; each
        preprocessing runs once per image."""
        inputs = {pre: to_batch(images, pre, self.tta) for pre in self.preprocess_specs}
        return self.probabilities_of(inputs, self.tta)

    @torch.no_grad()  # not inference_mode: it made CPU bf16 autocast 3x slower (measured)
    def probabilities_of(self, inputs: dict[PreprocessSpec, torch.Tensor], views: int = 1) -> torch.Tensor:
        """(num_experts, N) P(fake) from preprocessed (N * views, 3, S, S) tensors, one per
        distinct PreprocessSpec, image-major (to_batch's order): normalised float, or uint8
        (detector.prepared) normalised here after the copy to the device, a quarter of the bytes
        to move. Each image's P(fake) is the mean over its views. Expert by expert in chunks;
        experts sharing a trunk run it once."""
        n = len(next(iter(inputs.values())))
        if n % views:
            raise ValueError(f"{n} input rows are not {views} views per image")
        probs = torch.empty(len(self.experts), n)
        for group in self.groups:
            leader = self.experts[group[0]]
            pixels, shared = inputs[leader.spec.preprocess], leader.spec.shared_blocks
            for start in range(0, n, self.batch_size):
                chunk = pixels[start : start + self.batch_size].to(self.device, non_blocking=True)
                if chunk.dtype == torch.uint8:  # prepared, not yet normalised: do it here
                    chunk = normalised(chunk, leader.spec.preprocess)
                with self._autocast():
                    hidden = leader.backbone.forward_trunk(chunk, shared) if shared else None
                    for i in group:
                        expert = self.experts[i]
                        logits, _ = expert(chunk) if hidden is None else expert.forward_tail(hidden, shared)
                        probs[i, start : start + len(chunk)] = Expert.prob_fake(logits).cpu()
        return probs.view(len(self.experts), n // views, views).mean(dim=2) if views > 1 else probs

    def prepare(self, image: Image.Image) -> Prepared:
        """One image -> its experts' inputs, resized and cropped, not normalised: per distinct
        PreprocessSpec, uint8 (tta views, 3, S, S). Safe to call from any thread."""
        return {pre: uint8_views(image, pre, self.tta) for pre in self.preprocess_specs}

    def predict_prepared(self, prepared: Sequence[Prepared],
                         uncertain_spread: float | None = None) -> list[Score]:
        """`predict` on images already through `prepare`: the same scores, within float
        rounding."""
        if not prepared:
            return []
        inputs = {pre: torch.cat([p[pre] for p in prepared]) for pre in self.preprocess_specs}
        return self._scores(self.probabilities_of(inputs, self.tta), uncertain_spread)

    def predict(self, images: Sequence[Image.Image],
                uncertain_spread: float | None = None) -> list[Score]:
        """One Score per image; labelled UNCERTAIN where the experts' spread exceeds
        uncertain_spread (None: never)."""
        if not images:
            return []
        return self._scores(self.expert_probabilities(images), uncertain_spread)

    def _scores(self, probs: torch.Tensor, uncertain_spread: float | None) -> list[Score]:
        """One Score per column of (num_experts, N) P(fake)."""
        means = probs.mean(dim=0)
        spreads = probs.max(dim=0).values - probs.min(dim=0).values
        names = [e.spec.name for e in self.experts]
        scores = []
        for j in range(probs.shape[1]):
            score, spread = float(means[j]), float(spreads[j])
            scores.append(
                Score(
                    score=score,
                    label=label_for(score, self.threshold, spread, uncertain_spread),
                    experts={n: float(probs[i, j]) for i, n in enumerate(names)},
                    spread=spread,
                    model_version=self.version,
                )
            )
        return scores
