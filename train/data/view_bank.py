"""A view bank: the frozen shared trunk's output, computed once for a fixed set of views per image.

When an expert's first `shared_blocks` blocks are frozen (they are shared with the other experts
at inference), every training step would push each image through them again for nothing but
fresh augmentation. On a CPU that trunk is most of the cost, so instead each training image gets
`views` fixed views: view 0 is the prepared image (confound breaking only) and views 1.. are it
through the aligned degradation policy, each with its own draw. Their trunk outputs are stored
once as float16 (N, views, tokens, width) in a .npy file; the stages then train only the tail
blocks and the head on them. Stage 1 draws any view; stage 2 draws a degraded view for the
student and gives view 0 to the teacher, so token i of both covers the same area.

The trade: augmentation is limited to `views` draws per image instead of a new one each epoch.

A bank's file name is a digest of everything its contents depend on (image keys, preprocessing,
backbone spec and trunk weights, views, prep, policy, seed), so runs on the same pool of images
reuse one bank (the four starter experts, the probe, every leave-one-out fold: train.fit.run banks
the whole pool and picks each split's rows) and a changed input is never served stale features.
Each image's views depend only on (seed, its key), not on its position or its neighbours.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detector.expert import Expert
from detector.preprocess import to_tensor
from detector.tensor_digest import state_sha256
from detector.precision import PRECISIONS, resolve_precision
from detector.precision import autocast as precision_autocast
from train.data.records import Sample
from train.degrade.catalogue import DegradationPolicy, apply_ops
from train.data.prepared import PreparedViews, view_rng
from train.data.samples import NO_DEGRADATION, PrepConfig, open_sample, prepare
from train.progress import progress_bar


@dataclass(frozen=True)
class ViewBankConfig:
    views: int = 0  # views per training image (1 reference + views-1 degraded); 0: no bank
    dir: str = ""  # where banks are kept and reused; "": <run folder>/view-bank
    dtype: str = "fast"  # precision of the trunk pass that fills the bank (detector.precision names)
    batch_size: int = 32
    seed: int = 0  # seed of the views' preparation and degradation (experts may share a bank)
    # a pack of prepared views (featdistill train --pack-views) read instead of the source
    # images, e.g. on a GPU node that lacks them; "": prepare from the sources
    prepared: str = ""

    def __post_init__(self) -> None:
        if self.views < 0 or self.batch_size < 1:
            raise ValueError("view_bank: views must be >= 0 and batch_size >= 1")
        if self.dtype not in PRECISIONS:
            raise ValueError(f"view_bank.dtype must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.dtype!r}")


class _ViewSource(Dataset):
    """Item i: (views, 3, S, S), the reference view then the degraded ones."""

    def __init__(self, samples, preprocess, views, prep, policy, seed, prepared=None) -> None:
        self.samples, self.preprocess, self.views = list(samples), preprocess, views
        self.prep, self.policy, self.seed = prep, policy, seed
        self.prepared = prepared  # train.data.prepared.PreparedViews or None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        sample = self.samples[i]
        packed = self.prepared.get(sample.key) if self.prepared is not None else None
        if packed is not None:  # prepared elsewhere, its stream where preparation left it
            reference, rng = packed
        else:
            rng = view_rng(self.seed, sample.key)
            try:
                img = open_sample(sample)
            except (ValueError, OSError) as exc:
                raise RuntimeError(f"{sample.path}: cannot read training image ({exc})") from exc
            reference = prepare(img, self.prep, self.preprocess.size, rng)
        views = [reference] + [apply_ops(reference, self.policy.sample(rng), rng)
                               for _ in range(self.views - 1)]
        return torch.stack([to_tensor(v, self.preprocess) for v in views])


def trunk_digest(expert: Expert, upto: int) -> str:
    """The digest of the trunk's weights: the stem and first `upto` blocks, as the backbone names
    its parts."""
    return state_sha256(expert.backbone.trunk_state(upto))


def bank_key(samples: Sequence[Sample], expert: Expert, views: int, prep: PrepConfig,
             policy: DegradationPolicy, seed: int, trunk: str) -> str:
    parts = {"keys": [s.key for s in samples], "preprocess": asdict(expert.spec.preprocess),
             "backbone": asdict(expert.spec.backbone), "upto": expert.spec.shared_blocks,
             "views": views, "prep": prep.key_fields(), "policy": asdict(policy), "seed": seed,
             "trunk": trunk, "format": 3}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_bank(samples: Sequence[Sample], expert: Expert, views: int, folder: Path, *,
               prep: PrepConfig = PrepConfig(), policy: DegradationPolicy = NO_DEGRADATION,
               seed: int = 0, dtype: str = "fast", batch_size: int = 32,
               num_workers: int = 0, device: torch.device = torch.device("cpu"),
               name: str = "bank", prepared: PreparedViews | None = None) -> np.ndarray:
    """The bank of `samples` as a read-only memmap (N, views, tokens, width), built if missing.

    A build interrupted (killed, machine stopped) resumes where its last progress record says:
    a bank is hours of trunk passes on a CPU, and each image's views depend only on (seed, its
    key), so rows filled later are the rows an uninterrupted build would have written.
    `prepared` (a pack made where the sources are) stands in for opening and preparing them:
    the same views, so the same bank name."""
    upto = expert.spec.shared_blocks
    if upto <= 0:
        raise ValueError(f"expert {expert.spec.name!r} shares no trunk (shared_blocks = 0)")
    if views > 1 and not policy.aligned_only:
        raise ValueError("a view bank's degraded views must come from an aligned_only policy")
    key = bank_key(samples, expert, views, prep, policy, seed, trunk_digest(expert, upto))
    path = Path(folder) / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, progress = path.with_suffix(".partial"), path.with_suffix(".progress")
    out, row = _resume(partial, progress, len(samples))
    source = _ViewSource(samples[row:], expert.spec.preprocess, views, prep, policy, seed, prepared)
    loader = DataLoader(source, batch_size=max(1, batch_size // views), num_workers=num_workers)
    autocast = precision_autocast(resolve_precision(dtype, device), device)
    expert.eval()
    saved_at = time.monotonic()
    # no_grad, not inference_mode: under inference_mode, CPU bf16 autocast ran 3x slower here.
    with torch.no_grad(), autocast:
        for batch in progress_bar(loader, f"view bank {name} ({len(samples)} images x {views})",
                                  initial=row // loader.batch_size,
                                  total=row // loader.batch_size + len(loader)):
            b = batch.shape[0]
            hidden = expert.backbone.forward_trunk(batch.flatten(0, 1).to(device), upto)
            hidden = hidden.float().reshape(b, views, *hidden.shape[1:]).cpu().numpy()
            if out is None:
                out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                                shape=(len(samples), *hidden.shape[1:]))
            out[row : row + b] = hidden
            row += b
            if time.monotonic() - saved_at > _SAVE_EVERY_S:
                _save_progress(out, progress, row)
                saved_at = time.monotonic()
    if out is None:
        raise ValueError(f"view bank {name}: no images")
    out.flush()
    del out
    os.replace(partial, path)  # atomic: a half bank never sits under the final name
    progress.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


_SAVE_EVERY_S = 30.0  # how much trunk work an interruption may cost


def _save_progress(out: np.ndarray, progress: Path, rows: int) -> None:
    """Rows [0, rows) are on disk: flush them first, then say so (atomically)."""
    out.flush()
    tmp = progress.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"rows": rows, "shape": list(out.shape)}))
    os.replace(tmp, progress)


def _resume(partial: Path, progress: Path, n: int) -> tuple[np.ndarray | None, int]:
    """The partial bank and its first unfilled row, or (None, 0) to start afresh. A partial file
    without a progress record, or one of another shape, is discarded: its rows are unproven."""
    if partial.exists() and progress.exists():
        try:
            done = json.loads(progress.read_text())
            out = np.load(partial, mmap_mode="r+")
        except (OSError, ValueError):
            done, out = None, None
        if out is not None and done and list(out.shape) == done.get("shape") \
                and out.shape[0] == n and 0 <= int(done.get("rows", -1)) <= n:
            return out, int(done["rows"])
    partial.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return None, 0


class BankDataset(Dataset):
    """Items as ViewDataset's, with trunk outputs in place of pixels: {"hidden", "label", "index"}
    (+ "reference_hidden", view 0, in two-view mode, where "hidden" is a degraded view).
    Sample i's views are bank row rows[i]. A plain index (validation) reads view 0."""

    def __init__(self, bank: np.ndarray, samples: Sequence[Sample], rows: Sequence[int],
                 seed: int = 0, two_views: bool = False) -> None:
        if len(rows) != len(samples) or (len(rows) and max(rows) >= len(bank)):
            raise ValueError(f"rows do not fit: {len(samples)} samples, {len(rows)} rows, "
                             f"a bank of {len(bank)}")
        if two_views and bank.shape[1] < 2:
            raise ValueError("two-view (distillation) training needs a bank with views >= 2")
        self.bank, self.labels, self.rows = bank, [s.label for s in samples], list(rows)
        self.seed, self.two_views = seed, two_views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: Any) -> dict[str, Any]:
        index, epoch, position = item if isinstance(item, tuple) else (int(item), 0, int(item))
        rng = np.random.default_rng([self.seed, epoch, position])
        views = self.bank.shape[1]
        view = int(rng.integers(1, views)) if self.two_views else int(rng.integers(0, views))
        if not isinstance(item, tuple):
            view = 0  # plain index (validation): the reference view
        row = self.rows[index]
        out = {"hidden": torch.from_numpy(np.array(self.bank[row, view])),
               "label": self.labels[index], "index": index}
        if self.two_views:
            out["reference_hidden"] = torch.from_numpy(np.array(self.bank[row, 0]))
        return out
