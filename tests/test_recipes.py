"""The shipped training recipes (examples/train/) load, and v2 keeps its promises: confound
breaking on for both classes, fast precision, no held-out or reserved manifests as sources."""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from train.cli import register_eval
from train.data.samples import prepare
from train.fit.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "examples/train/starter-v2.yaml"
SOURCES = "data.sources=[{path: /x/aigi.csv}, {path: /x/git/train.csv, weight: 3.0}]"


def test_starter_v2_needs_its_sources_set():
    with pytest.raises(ConfigError, match="needs a path"):  # the git index is the script's to set
        load_config(V2)


def test_starter_v2_recipe():
    cfg = load_config(V2, [SOURCES])
    assert cfg.precision == "fast"
    prep = cfg.data.prep
    assert prep.enabled and prep.p_jpeg == 1.0 and prep.jpeg_quality[0] >= 30
    # the confound breaker never sees the label: both classes get the same random treatment
    assert "label" not in inspect.signature(prepare).parameters
    assert cfg.data.balance and cfg.data.view_bank.views >= 2
    assert cfg.data.split.kind == "leave_out" and "gpt-image/gpt-image-1" in cfg.data.split.holdout
    assert not any(Path(s.path).name in ("heldout.csv", "eval_only.csv") for s in cfg.data.sources)
    # the script's "harsh" bank: overrides that must stay valid
    harsh = load_config(V2, [SOURCES, "data.degrade={p_degrade: 1.0, p_extended: 0.8, min_ops: 2, "
                             "max_ops: 3}", "data.prep.jpeg_quality=[35, 100]"])
    assert harsh.data.degrade.p_extended == 0.8 and harsh.data.prep.jpeg_quality == (35, 100)


def test_train_starter_v2_script_sets_what_the_recipe_leaves_open():
    script = (ROOT / "scripts/train_starter_v2.sh").read_text()
    for needle in ("expert.pretrained=", "data.sources=", "--smoke", "heldout.csv"):
        assert needle in script
    # the Debian wallpapers are the independent evaluation's: never fetched, trained or scored on
    assert "report-wallpapers" not in script and '--data "$eval_only"' not in script


def test_v2_script_stores_a_threshold_that_does_not_depend_on_the_cpus_bf16():
    # `--dtype fast` is bf16 on some CPUs and fp32 on others; the threshold written into the bundle
    # and the adapter is a default, so it is chosen from fp32 scores everywhere (argparse: last wins)
    script = (ROOT / "scripts/train_starter_v2.sh").read_text()
    line = next(ln for ln in script.replace("\\\n", " ").splitlines() if "--set-threshold-fpr" in ln)
    assert line.rstrip().endswith('"${EVAL[@]}" --dtype float32')
    parser = argparse.ArgumentParser()
    register_eval(parser.add_subparsers())
    args = parser.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", "o",
                              "--dtype", "fast", "--dtype", "float32"])
    assert args.dtype == "float32"


def test_v2_tail_knob_overrides_make_a_valid_deeper_expert():
    # what FEATDISTILL_V2_TAIL=4 adds to each expert: a trunk shared up to block 8, blocks 8-11 tuned
    script = (ROOT / "scripts/train_starter_v2.sh").read_text()
    assert 'expert.shared_blocks=$(( 12 - FEATDISTILL_V2_TAIL ))' in script
    cfg = load_config(V2, [SOURCES, "expert.preset=starter:starter-b", "expert.shared_blocks=8",
                           "stage1.trainable_blocks=4", "stage2.trainable_blocks=4"])
    spec = cfg.expert.resolve()
    assert spec.name == "starter-b" and spec.shared_blocks == 8
    assert cfg.stage1.trainable_blocks == cfg.stage2.trainable_blocks == 4
    assert load_config(V2, [SOURCES]).expert.resolve().shared_blocks == 10  # the default: 2 tuned
