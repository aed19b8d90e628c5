"""One stage's machinery: optimizer, warmup-cosine schedule, the epoch loop and validation.

A stage trains the student expert; stage 2 also holds a frozen teacher and feeds the student the
degraded view and the teacher the reference view (see train.fit.losses). Gradients are accumulated
over `accumulate` micro-batches (the last group of an epoch may be shorter and is scaled by its
own size), clipped, and followed by one optimizer and one scheduler step. The forward passes run
under the configured autocast (detector.precision: "auto" is bf16 on CUDA, float32 on CPU).

Batches carry either pixels or, from a view bank (train.data.view_bank), the frozen shared trunk's
output as "hidden": then only the expert's tail blocks and head run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from detector.expert import Expert
from detector.precision import autocast, resolve_precision
from train.fit.config import StageConfig
from train.fit.freeze import set_train_mode
from train.fit.losses import classification_loss, stage_loss
from train.evaluate.metrics import accuracy, roc_auc
from train.progress import progress_bar


def make_optimizer(params: list[nn.Parameter], cfg: StageConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms and embeddings (tensors of < 2 dims) get no weight decay."""
    decay = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """lr factor for optimizer step s: linear 0 -> 1 over `warmup`, cosine 1 -> min_ratio after."""
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def make_scheduler(optimizer, cfg: StageConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))


def autocast_for(device: torch.device, precision: str = "auto"):
    return autocast(resolve_precision(precision, device), device)


def run_expert(model: Expert, batch: dict[str, Any], device: torch.device, blocks=(),
               reference: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The expert on a batch's pixels, or on its banked trunk output; `reference` reads the
    reference view instead (stage 2's teacher input)."""
    if "hidden" in batch:
        hidden = batch["reference_hidden" if reference else "hidden"]
        return model.forward_tail(hidden.to(device, non_blocking=True).float(),
                                  model.spec.shared_blocks, blocks)
    pixels = batch["reference" if reference else "pixels"]
    return model(pixels.to(device, non_blocking=True), blocks)


class MetricsLog:
    """metrics.jsonl in the run folder: one JSON object per line (step and epoch events)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after `epoch` (left by an interrupted run being resumed)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@dataclass
class Stage:
    name: str  # "stage1" or "stage2"
    cfg: StageConfig
    model: Expert
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DataLoader
    device: torch.device
    accumulate: int = 1
    clip_grad: float = 0.0
    teacher: Expert | None = None
    blocks: list[int] = field(default_factory=list)  # distilled blocks (0-based)
    precision: str = "auto"


def _forward(stage: Stage, batch: dict[str, Any]):
    labels = batch["label"].to(stage.device, non_blocking=True)
    with autocast_for(stage.device, stage.precision):
        if stage.teacher is None:
            logits, _ = run_expert(stage.model, batch, stage.device)
            return stage_loss(logits, labels)
        logits, student_tokens = run_expert(stage.model, batch, stage.device, stage.blocks)
        with torch.no_grad():
            _, teacher_tokens = run_expert(stage.teacher, batch, stage.device, stage.blocks,
                                           reference=True)
    return stage_loss(logits, labels, student_tokens, teacher_tokens, stage.cfg.distill_weight)


def _optimizer_step(stage: Stage) -> float:
    params = [p for g in stage.optimizer.param_groups for p in g["params"]]
    if stage.clip_grad > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, stage.clip_grad))
    else:
        norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
    stage.optimizer.step()
    stage.scheduler.step()
    stage.optimizer.zero_grad(set_to_none=True)
    return norm


def run_epoch(stage: Stage, epoch: int, step: int, log: MetricsLog, log_every: int) -> tuple[int, dict]:
    """Train one epoch; returns the global optimizer step count after it and the epoch's means."""
    set_train_mode(stage.model)
    stage.loader.sampler.set_epoch(epoch)
    n_batches = len(stage.loader)
    window: list[dict[str, float]] = []
    totals: list[dict[str, float]] = []
    images, started, window_start = 0, time.perf_counter(), time.perf_counter()
    bar = progress_bar(stage.loader, f"{stage.name} epoch {epoch}", leave=False)
    for i, batch in enumerate(bar):
        group_start = i - i % stage.accumulate
        group = min(stage.accumulate, n_batches - group_start)
        parts = _forward(stage, batch)
        (parts.total / group).backward()
        window.append(parts.floats())
        images += len(batch["label"])
        if i - group_start + 1 < group:
            continue
        lr = stage.optimizer.param_groups[0]["lr"]
        grad_norm = _optimizer_step(stage)
        step += 1
        if step % log_every == 0 or i == n_batches - 1:
            now = time.perf_counter()
            record = {k: float(np.mean([w[k] for w in window])) for k in ("ce", "distill", "total")}
            log.write({"event": "step", "stage": stage.name, "epoch": epoch, "step": step, **record,
                       "lr": lr, "grad_norm": grad_norm,
                       "images_per_s": images / max(now - window_start, 1e-9)})
            bar.set_postfix(loss=f"{record['total']:.4f}", lr=f"{lr:.2e}")
            totals.extend(window)
            window, images, window_start = [], 0, now
    totals.extend(window)
    means = {k: float(np.mean([w[k] for w in totals])) for k in ("ce", "distill", "total")
             if totals}
    means["seconds"] = time.perf_counter() - started
    return step, means


@torch.no_grad()
def predict(model: Expert, loader: DataLoader, device: torch.device,
            precision: str = "auto") -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, P(fake), mean cross-entropy) over a loader, model in eval mode."""
    model.eval()
    labels, probs, losses = [], [], []
    for batch in loader:
        y = batch["label"].to(device)
        with autocast_for(device, precision):
            logits, _ = run_expert(model, batch, device)
        losses.append(float(classification_loss(logits, y)) * len(y))
        probs.append(Expert.prob_fake(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0), float("nan")
    y_all = np.concatenate(labels)
    return y_all, np.concatenate(probs), sum(losses) / len(y_all)


def validate(model: Expert, loader: DataLoader | None, device: torch.device,
             threshold: float, precision: str = "auto") -> dict[str, Any]:
    if loader is None:
        return {}
    labels, probs, ce = predict(model, loader, device, precision)
    return {"val_auc": roc_auc(labels, probs), "val_acc": accuracy(labels, probs, threshold),
            "val_ce": ce, "val_images": int(len(labels))}
