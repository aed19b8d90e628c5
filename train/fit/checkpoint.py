"""Per-epoch checkpoints: model, optimizer, scheduler, every RNG state, epoch and step.

`<run>/checkpoints/epoch-NNN.pt`, written atomically (temp file, fsync, rename) at the end of each
epoch, after validation, so resuming from epoch N continues exactly where the uninterrupted run
went on: the next optimizer step sees the same batch, dropout masks and weights. Epoch 0 (the
initial weights) is written only when it is the stage-2 teacher.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^epoch-(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return checkpoint_dir(run_dir) / f"epoch-{epoch:03d}.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, epoch: int, **state: Any) -> Path:
    """Write epoch-NNN.pt holding `state` (model, optimizer, ... state dicts) plus RNG states."""
    path = checkpoint_path(run_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"epoch": epoch, "rng": rng_state(), **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str | Path, epoch: int) -> dict[str, Any]:
    path = checkpoint_path(run_dir, epoch)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint of epoch {epoch} not found")
    # Our own files: optimizer and RNG states are not plain tensors, so weights_only is off.
    return torch.load(path, map_location="cpu", weights_only=False)


def saved_epochs(run_dir: str | Path) -> list[int]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_epoch(run_dir: str | Path) -> int | None:
    epochs = [e for e in saved_epochs(run_dir) if e > 0]
    return epochs[-1] if epochs else None


def prune(run_dir: str | Path, keep_last: int, protect: set[int]) -> None:
    """Delete all but the last `keep_last` epoch checkpoints and those in `protect` (0: keep all)."""
    if keep_last <= 0:
        return
    epochs = [e for e in saved_epochs(run_dir) if e > 0]
    for epoch in epochs[:-keep_last]:
        if epoch not in protect:
            checkpoint_path(run_dir, epoch).unlink(missing_ok=True)
