"""One precision vocabulary; bf16 on a CPU only where the CPU computes it natively."""
from __future__ import annotations

import pytest
import torch

from detector import cpu, precision
from detector.precision import resolve_precision

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only named, never used: resolve_precision does not touch the device


@pytest.mark.parametrize("native", [True, False])
def test_auto_never_depends_on_the_cpu(monkeypatch, native):
    monkeypatch.setattr(precision, "has_native_bf16", lambda: native)
    assert resolve_precision(None, CPU) is torch.float32
    assert resolve_precision("auto", CPU) is torch.float32
    assert resolve_precision("auto", CUDA) is torch.bfloat16


def test_fast_picks_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)
    assert resolve_precision("fast", CPU) is torch.bfloat16
    monkeypatch.setattr(precision, "has_native_bf16", lambda: False)
    assert resolve_precision("fast", CPU) is torch.float32
    assert resolve_precision("fast", CUDA) is torch.bfloat16


def test_asking_an_emulating_cpu_for_bf16_warns_but_obeys(monkeypatch):
    monkeypatch.setattr(precision, "has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert resolve_precision("bfloat16", CPU) is torch.bfloat16


def test_bad_names_and_float16_on_cpu_are_refused():
    with pytest.raises(ValueError, match="one of auto, fast"):
        resolve_precision("half", CPU)
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_precision("float16", CPU)


def test_cpu_flags_are_read_by_name():
    assert cpu.has_native_bf16(frozenset({"avx2", "avx512_bf16"}))
    assert cpu.has_native_bf16(frozenset({"bf16", "asimd"}))  # arm64
    assert not cpu.has_native_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert cpu.has_int8_dot(frozenset({"avx_vnni"})) and not cpu.has_int8_dot(frozenset({"avx2"}))
    assert cpu.describe(frozenset({"avx2"})) == "avx2, no VNNI, no native bf16"
    assert isinstance(cpu.cpu_flags(), frozenset)  # whatever this machine is
