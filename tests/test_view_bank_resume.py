"""A view bank build that is interrupted resumes where it stopped and ends with the same bank.

A bank is hours of trunk passes on a CPU (the starter-v2 banks: about 11,000 ViT-B/16 passes
each), long enough that a machine stop or a kill mid-build is expected, not exceptional."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from detector.expert import Expert
from detector.presets import tiny
from tests.conftest import make_image
from train.data import view_bank
from train.data.records import Sample
from train.degrade.catalogue import DegradationPolicy


class Interrupted(RuntimeError):
    pass


@pytest.fixture(scope="module")
def expert() -> Expert:
    torch.manual_seed(0)
    return Expert.build(dataclasses.replace(tiny().experts[0], shared_blocks=1)).eval()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i in range(12):
        path = folder / f"{i}.png"
        make_image(40, 36, seed=i).save(path)
        out.append(Sample(path=str(path), label=i % 2, key=f"img-{i}"))
    return out


def _build(samples, expert, folder):
    policy = DegradationPolicy(p_degrade=1.0, max_ops=1, aligned_only=True)
    return view_bank.build_bank(samples, expert, 2, folder, policy=policy, dtype="float32",
                                batch_size=4, seed=5)


def _interrupt_after(monkeypatch, expert, calls: int) -> None:
    real = expert.backbone.forward_trunk
    count = {"n": 0}

    def flaky(x, upto):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupted("killed")
        return real(x, upto)
    monkeypatch.setattr(expert.backbone, "forward_trunk", flaky)


def test_an_interrupted_build_resumes_to_the_same_bank(samples, expert, tmp_path, monkeypatch):
    whole = np.array(_build(samples, expert, tmp_path / "whole"))
    monkeypatch.setattr(view_bank, "_SAVE_EVERY_S", -1.0)  # record progress after every batch
    with monkeypatch.context() as m:
        _interrupt_after(m, expert, calls=3)
        with pytest.raises(Interrupted):
            _build(samples, expert, tmp_path / "resumed")
    progress = list((tmp_path / "resumed").glob("*.progress"))
    assert len(progress) == 1 and '"rows": 6' in progress[0].read_text()  # 3 batches of 2 images

    passes = {"n": 0}
    real = expert.backbone.forward_trunk

    def counted(x, upto):
        passes["n"] += x.shape[0]
        return real(x, upto)
    monkeypatch.setattr(expert.backbone, "forward_trunk", counted)
    resumed = np.array(_build(samples, expert, tmp_path / "resumed"))
    assert passes["n"] == (12 - 6) * 2  # only the unfilled rows' views went through the trunk
    np.testing.assert_array_equal(resumed, whole)
    assert not list((tmp_path / "resumed").glob("*.partial"))
    assert not list((tmp_path / "resumed").glob("*.progress"))


def test_a_partial_bank_without_its_progress_record_is_rebuilt(samples, expert, tmp_path,
                                                               monkeypatch):
    whole = np.array(_build(samples, expert, tmp_path / "whole"))
    monkeypatch.setattr(view_bank, "_SAVE_EVERY_S", -1.0)
    with monkeypatch.context() as m:
        _interrupt_after(m, expert, calls=2)
        with pytest.raises(Interrupted):
            _build(samples, expert, tmp_path / "b")
    for record in (tmp_path / "b").glob("*.progress"):
        record.unlink()  # the rows on disk are no longer vouched for
    np.testing.assert_array_equal(np.array(_build(samples, expert, tmp_path / "b")), whole)
