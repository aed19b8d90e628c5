"""What this CPU computes natively, read once from /proc/cpuinfo.

Speed and even results depend on it: bfloat16 autocast on a CPU without bf16 instructions is
emulated (several times slower than float32), and onnxruntime's dynamically quantised INT8
matrix products saturate on x86 CPUs without VNNI. Nothing that decides a default or a test
reads these; they choose between equally valid paths and explain figures.
"""
from __future__ import annotations

import functools
from pathlib import Path

# x86: AVX512-BF16 or AMX-BF16; arm64: the BF16 extension (Neoverse V1/N2, Graviton 3 and on).
_BF16 = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# x86: AVX512-VNNI or AVX-VNNI; arm64: the dot-product extension.
_INT8_DOT = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The kernel's feature flags of the first CPU (x86 `flags`, arm64 `Features`); empty if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & _BF16)


def has_int8_dot(flags: frozenset[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & _INT8_DOT)


def describe(flags: frozenset[str] | None = None) -> str:
    """The flags that matter here, for messages: e.g. 'avx2, no VNNI, no native bf16'."""
    flags = cpu_flags() if flags is None else flags
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    vnni = ", ".join(sorted(flags & _INT8_DOT)) or "no VNNI"
    bf16 = ", ".join(sorted(flags & _BF16)) or "no native bf16"
    return f"{simd}, {vnni}, {bf16}"
