"""Training data, config and freezing: sources, splits, weights, views, config files, trainable parts.
Generated images only (train.data.toy and numpy); nothing reads ../shared/data."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from detector import presets
from detector.expert import Expert
from train.data.records import (DataError, SourceConfig, SplitConfig, heldout, read_manifest, read_source,
                        read_sources, sampling_weights, split_samples)
from train.data.samples import EpochSampler, PrepConfig, ViewDataset
from train.data.toy import GENERATORS, write_toy_dataset
from train.degrade.catalogue import DegradationPolicy
from train.fit.config import ConfigError, TrainConfig, load_config
from train.fit.freeze import apply_trainable, backbone_parts, set_train_mode

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "train"


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, count=40, size=32, seed=1)
    return root


def test_manifest_csv_and_jsonl_read_alike(toy_root, tmp_path):
    csv_samples = read_manifest(toy_root / "manifest.csv")
    lines = [json.dumps({"path": s.key, "label": s.label, "generator": s.generator, "source": "x"})
             for s in csv_samples]
    (toy_root / "m.jsonl").write_text("\n".join(lines) + "\n")
    jsonl_samples = read_manifest(toy_root / "m.jsonl")
    assert [(s.path, s.label, s.generator) for s in csv_samples] == \
           [(s.path, s.label, s.generator) for s in jsonl_samples]
    assert all(Path(s.path).is_file() for s in csv_samples)  # relative to the manifest's folder
    assert Counter(s.label for s in csv_samples) == {0: 20, 1: 20}


def test_folder_source_reads_real_and_fake_generators(toy_root):
    samples = read_source(SourceConfig(path=str(toy_root)))
    assert {s.generator for s in samples if s.label} == set(GENERATORS)
    assert all(s.generator == "" for s in samples if not s.label)
    assert len(samples) == 40


def test_bad_label_is_an_error_naming_the_row(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(DataError, match="row 2"):
        read_manifest(tmp_path / "m.csv")


def test_leave_out_split_holds_out_named_generators_and_a_share_of_reals():
    pool = read_sources([SourceConfig(kind="toy", count=400, seed=3)])
    split = split_samples(pool, SplitConfig(kind="leave_out", holdout=("toy-stripes",), seed=1))
    assert "toy-stripes" not in {s.generator for s in split.train}
    assert {s.generator for s in split.val if s.label} == {"toy-stripes"}
    val_reals = sum(not s.label for s in split.val)
    assert 60 <= val_reals <= 140  # about half the 200 reals, as stripes are half of the fakes
    assert heldout(pool, split.info) == split.val  # rebuilt from the recorded info alone
    with pytest.raises(DataError, match="not in the data"):
        split_samples(pool, SplitConfig(kind="leave_out", holdout=("nope",)))


def test_ratio_split_is_stable_and_disjoint():
    pool = read_sources([SourceConfig(kind="toy", count=200)])
    a = split_samples(pool, SplitConfig(val_fraction=0.25, seed=4))
    b = split_samples(pool[::-1], SplitConfig(val_fraction=0.25, seed=4))
    assert {s.key for s in a.val} == {s.key for s in b.val}
    assert not {s.key for s in a.val} & {s.key for s in a.train}
    assert 25 <= len(a.val) <= 75


def test_sampling_weights_balance_classes_and_respect_source_weights():
    pool = read_sources([SourceConfig(kind="toy", count=40, seed=0),
                         SourceConfig(kind="toy", count=10, seed=1, weight=3.0)])
    pool = [s for s in pool if s.label or s.origin == 0]  # reals only in source 0: unbalanced
    w = sampling_weights(pool, [1.0, 3.0], balance=True)
    labels = np.array([s.label for s in pool])
    origins = np.array([s.origin for s in pool])
    assert w[labels == 0].sum() == pytest.approx(0.5)
    fake_mass = [w[(labels == 1) & (origins == o)].sum() for o in (0, 1)]
    # before balancing source 1 has 3x source 0's mass, and half of source 0's is on reals
    assert fake_mass[1] / fake_mass[0] == pytest.approx(6.0)
    plain = sampling_weights(pool, [1.0, 3.0], balance=False)
    assert plain[origins == 1].sum() / plain[origins == 0].sum() == pytest.approx(3.0)
    sampler = EpochSampler(len(pool), 2000, w, seed=0)
    drawn = [pool[i].label for i, _, _ in sampler]
    assert 0.45 < np.mean(drawn) < 0.55


def test_sampler_order_is_fixed_by_seed_and_epoch():
    s = EpochSampler(50, seed=2)
    s.set_epoch(3)
    first = list(s)
    s.set_epoch(4)
    other = list(s)
    s.set_epoch(3)
    assert list(s) == first and [i for i, _, _ in first] != [i for i, _, _ in other]
    assert sorted(i for i, _, _ in first) == list(range(50))  # unweighted: a permutation


def test_two_views_share_geometry_and_are_deterministic():
    spec = presets.tiny().experts[0]
    pool = read_sources([SourceConfig(kind="toy", count=8, image_size=40)])
    policy = DegradationPolicy(p_degrade=1.0, aligned_only=True)
    prep = PrepConfig(enabled=True)
    ds = ViewDataset(pool, spec.preprocess, policy, prep, seed=0, two_views=True)
    a, b = ds[(1, 2, 5)], ds[(1, 2, 5)]
    assert a["pixels"].shape == a["reference"].shape == (3, 32, 32)
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["reference"], b["reference"])
    assert not torch.equal(a["pixels"], a["reference"])  # p_degrade = 1: the views differ
    with pytest.raises(ValueError, match="aligned_only"):
        ViewDataset(pool, spec.preprocess, DegradationPolicy(), two_views=True)


def test_example_configs_load_from_toml_and_yaml(tmp_path):
    toml_cfg = load_config(EXAMPLES / "tiny-toy.toml")
    assert isinstance(toml_cfg, TrainConfig) and toml_cfg.expert.resolve().name == "clip-tiny-a"
    aigi = load_config(EXAMPLES / "aigi-small.yaml")
    assert aigi.data.split.kind == "leave_out" and aigi.stage2.distill_weight > 0
    assert aigi.expert.resolve().preprocess.size == 64
    yaml_copy = tmp_path / "c.yaml"
    import tomllib

    import yaml
    yaml_copy.write_text(yaml.safe_dump(tomllib.loads((EXAMPLES / "tiny-toy.toml").read_text())))
    assert load_config(yaml_copy) == toml_cfg


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "tiny-toy.toml").read_text().replace("[stage1]", "[stage1]\nepocs = 2"))
    with pytest.raises(ConfigError, match="epocs"):
        load_config(bad)
    with pytest.raises(ConfigError, match="teacher_epoch"):
        load_config(EXAMPLES / "tiny-toy.toml", ["stage2.teacher_epoch=9"])
    cfg = load_config(EXAMPLES / "tiny-toy.toml", ["stage1.lr=1e-3", "data.split.holdout=[a, b]"])
    assert cfg.stage1.lr == 1e-3 and cfg.data.split.holdout == ("a", "b")


@pytest.mark.parametrize("index", [0, 2])  # open_clip and transformers towers
def test_trainable_blocks_and_frozen_parts_in_eval_mode(index):
    expert = Expert.build(presets.tiny().experts[index])
    parts = backbone_parts(expert)
    assert parts.stem and parts.head and len(parts.blocks) == expert.backbone.num_blocks()
    head_only = apply_trainable(expert, "none")
    assert {id(p) for p in head_only} == {id(p) for p in expert.head.parameters()}
    set_train_mode(expert)
    assert not expert.backbone.training and expert.head.training
    last = apply_trainable(expert, 1)
    trainable = {n for n, p in expert.backbone.named_parameters() if p.requires_grad}
    assert trainable == set(parts.blocks[len(parts.blocks) - 1]) | set(parts.head)
    set_train_mode(expert)
    first = re.match(r"(.*\.(?:resblocks|blocks|layers)\.0)\.", parts.blocks[0][0]).group(1)
    first_block = expert.backbone.get_submodule(first)
    assert not first_block.training
    assert len(last) > len(head_only)
    assert len(apply_trainable(expert, "all")) == len(list(expert.parameters()))


def test_training_refuses_rows_reserved_for_evaluation(tmp_path):
    import pytest

    from train.data.records import DataError, read_manifest

    (tmp_path / "m.csv").write_text("path,label,generator,source,split\na.png,real,,wallpapers,eval_only\n")
    assert len(read_manifest(tmp_path / "m.csv")) == 1  # evaluation may read it
    with pytest.raises(DataError, match="reserved for evaluation"):
        read_manifest(tmp_path / "m.csv", training=True)


def test_training_refuses_heldout_rows(tmp_path):
    import pytest

    from train.data.records import DataError, SourceConfig, read_manifest, read_source, read_sources

    (tmp_path / "m.csv").write_text("path,label,generator,source,split\n"
                                    "a.png,real,,photos,train\nb.png,fake,flux,gallery,heldout\n")
    assert len(read_manifest(tmp_path / "m.csv")) == 2  # evaluation may read it
    with pytest.raises(DataError, match=r"row 3 .*split=heldout"):
        read_manifest(tmp_path / "m.csv", training=True)
    with pytest.raises(DataError, match="split=heldout"):  # the path training takes
        read_sources([SourceConfig(path=str(tmp_path / "m.csv"))])
    assert len(read_source(SourceConfig(path=str(tmp_path / "m.csv")), training=False)) == 2


def test_limit_per_source_caps_each_repository_then_limit_applies(tmp_path):
    rows = ["path,label,generator,source"]
    rows += [f"big/{i}.png,fake,krea/krea-2,gallery@1" for i in range(50)]
    rows += [f"small/{i}.png,real,,photos@2" for i in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    capped = read_source(SourceConfig(path=str(tmp_path / "m.csv"), limit_per_source=10))
    assert Counter(s.source for s in capped) == {"gallery@1": 10, "photos@2": 5}
    again = read_source(SourceConfig(path=str(tmp_path / "m.csv"), limit_per_source=10))
    assert [s.key for s in again] == [s.key for s in capped]  # a fixed, hash-chosen subset
    both = read_source(SourceConfig(path=str(tmp_path / "m.csv"), limit_per_source=10, limit=12))
    assert len(both) == 12 and {s.key for s in both} <= {s.key for s in capped}
