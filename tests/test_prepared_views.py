"""A pack of prepared views (train.data.prepared) builds the same view bank as the source images:
a GPU node that has only the pack trains on exactly the views the source machine would make."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from shell.cli import main
from train.data import view_bank
from train.data.prepared import PreparedViews, pack_views
from train.data.records import DataError
from train.data.samples import PrepConfig
from train.degrade.catalogue import DegradationPolicy
# the same tiny banked expert and source images as the resumable bank's tests
from tests.test_view_bank_resume import expert, samples  # noqa: F401 (pytest fixtures)

PREP = PrepConfig(enabled=True, crop_fraction=(0.5, 1.0), resize=(1.0, 1.5), jpeg_quality=(50, 100))
POLICY = DegradationPolicy(p_degrade=1.0, max_ops=2, aligned_only=True)


def _bank(samples, expert, folder, prepared=None):
    return np.asarray(view_bank.build_bank(samples, expert, 3, folder, prep=PREP, policy=POLICY,
                                           seed=5, dtype="float32", batch_size=6,
                                           prepared=prepared))


def test_a_bank_from_the_pack_equals_the_bank_from_the_sources(samples, expert, tmp_path):
    size = expert.spec.preprocess.size
    counts = pack_views(samples, PREP, size, 5, tmp_path / "pack")
    assert counts["images"] == len(samples) and counts["bytes"] > 0
    direct = _bank(samples, expert, tmp_path / "direct")
    # The node with the pack has none of the sources: every path points nowhere.
    absent = [dataclasses.replace(s, path=str(tmp_path / "gone" / f"{i}.png"))
              for i, s in enumerate(samples)]
    packed = PreparedViews(tmp_path / "pack", PREP, size, 5)
    remote = _bank(absent, expert, tmp_path / "remote", packed)
    np.testing.assert_array_equal(direct, remote)
    names = {p.name for p in (tmp_path / "direct").glob("*.npy")}
    assert names == {p.name for p in (tmp_path / "remote").glob("*.npy")}  # one digest


def test_a_pack_refuses_another_preparation(samples, expert, tmp_path):
    size = expert.spec.preprocess.size
    pack_views(samples[:2], PREP, size, 5, tmp_path / "pack")
    with pytest.raises(DataError, match="pack again"):
        PreparedViews(tmp_path / "pack", dataclasses.replace(PREP, jpeg_quality=(35, 100)), size, 5)
    with pytest.raises(DataError, match="pack again"):
        PreparedViews(tmp_path / "pack", PREP, size, 6)
    with pytest.raises(DataError, match="no pack.json"):
        PreparedViews(tmp_path, PREP, size, 5)


def test_one_key_naming_two_files_is_refused(samples, tmp_path):
    twins = [samples[0], dataclasses.replace(samples[1], key=samples[0].key)]
    with pytest.raises(DataError, match="names two files"):
        pack_views(twins, PREP, 32, 0, tmp_path / "pack")


def test_train_cli_packs_the_configs_pool(tmp_path, capsys):
    example = str(Path(__file__).resolve().parents[1] / "examples" / "train" / "tiny-toy.toml")
    args = ["train", example, "--pack-views", str(tmp_path / "pack"),
            "--set", "data.sources=[{kind: toy, count: 12, image_size: 32}]",
            "--set", "data.prep={enabled: true}"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["images"] == 12
    lines = (tmp_path / "pack" / "index.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len(list((tmp_path / "pack" / "views").iterdir())) == 12
