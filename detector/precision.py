"""One vocabulary of numeric precision, for inference, training and view banks.

- `float32`, `bfloat16`, `float16`: that autocast dtype (float16 needs CUDA).
- `auto` (the default everywhere): bfloat16 on CUDA, float32 on CPU. It never depends on which
  CPU this is, so a score on one machine is the score on another.
- `fast`: bfloat16 where the hardware computes it natively (CUDA, or a CPU with AVX512-BF16,
  AMX or arm64 BF16), float32 elsewhere. For jobs that want speed and accept bf16 rounding:
  on an AVX2-only CPU emulated bf16 is several times slower than float32.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from detector.cpu import describe, has_native_bf16

PRECISIONS = ("auto", "fast", "float32", "bfloat16", "float16")
# Training leaves out float16: it needs a loss scaler, which the training loop does not have.
TRAINING_PRECISIONS = tuple(p for p in PRECISIONS if p != "float16")
PRECISION_HELP = ("precision: auto (bfloat16 on CUDA, float32 on CPU), fast (bfloat16 where "
                  "native: CUDA or a CPU with AVX512-BF16/AMX, else float32), float32, bfloat16, "
                  "float16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_precision(name: str | None, device: torch.device) -> torch.dtype:
    """The dtype `name` means on `device`; warns when bfloat16 is asked of a CPU that emulates it."""
    name = name or "auto"
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    on_cpu = device.type == "cpu"
    if name == "auto":
        name = "float32" if on_cpu else "bfloat16"
    elif name == "fast":
        name = "bfloat16" if not on_cpu or has_native_bf16() else "float32"
    elif name == "bfloat16" and on_cpu and not has_native_bf16():
        warnings.warn(
            f"bfloat16 on this CPU ({describe()}) is emulated and slower than float32; "
            "'fast' picks float32 here", RuntimeWarning, stacklevel=2)
    if name == "float16" and on_cpu:
        raise ValueError("float16 autocast needs CUDA; on CPU use bfloat16 or float32")
    return _DTYPES[name]


def autocast(dtype: torch.dtype, device: torch.device):
    """Autocast to `dtype` on `device`, or nothing for float32 (exact, and no autocast overhead)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
