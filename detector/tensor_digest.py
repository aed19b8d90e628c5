"""The one digest of model weights: SHA-256 over a state dict's tensors.

Names, dtypes, shapes and bytes, in name order; not a file's bytes, whose metadata and layout may
differ between two conversions of the same weights. Adapters record it for the backbone file they
were trained from (detector.adapter), the detector compares trunks with it before sharing them
(detector.service), and view banks key their cached trunk outputs on it (train.data.view_bank).
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's tensors in name order: identical weights, identical digest."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
