"""The trainer end to end on the toy task (tiny CLIP expert, generated images, CPU): both stages,
metrics, checkpoints, exact resume, export, and the CLI (`featdistill train`, `eval`, `degrade`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from detector.bundle import read_manifest
from detector.service import Detector
from shell.cli import main
from train.data.records import read_sources, split_samples
from train.data.toy import render, toy_items, write_toy_dataset
from train.fit import checkpoint as ckpt
from train.fit.config import load_config
from train.fit.run import build_expert, comparable_config, resume_mismatch, setup_stage

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train" / "tiny-toy.toml"
# The example run (3 + 3 epochs of 120 toy images); 5 epochs total is enough for the checks.
ARGS = ["--set", "data.sources=[{kind: toy, count: 120, image_size: 32}]",
        "--set", "stage1.epochs=3", "--set", "stage2.epochs=3"]


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in rows]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", str(EXAMPLE), "--out", str(out), *ARGS]) == 0
    return out


def records(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_stage1_loss_falls_and_validation_learns(run):
    epochs = records(run, "epoch")
    stage1 = [r for r in epochs if r["stage"] == "stage1"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5, 6]
    assert stage1[-1]["ce"] < 0.7 * stage1[0]["ce"]
    assert epochs[-1]["val_auc"] > 0.95 and epochs[-1]["val_acc"] > 0.85


def test_stage2_distillation_is_positive_and_falls(run):
    stage2 = [r for r in records(run, "epoch") if r["stage"] == "stage2"]
    assert all(r["distill"] > 0 for r in stage2)
    assert stage2[-1]["distill"] < 0.7 * stage2[0]["distill"]
    for r in stage2:
        assert r["total"] == pytest.approx(r["ce"] + 5.0 * r["distill"], rel=1e-5)
    assert all(r["distill"] == 0 for r in records(run, "step") if r["stage"] == "stage1")


def test_step_metrics_lines(run):
    steps = records(run, "step")
    assert steps and {"ce", "distill", "total", "lr", "images_per_s", "grad_norm"} <= set(steps[0])
    assert all(r["images_per_s"] > 0 for r in steps)
    assert [r["step"] for r in steps] == sorted({r["step"] for r in steps})
    stage1_lr = [r["lr"] for r in steps if r["stage"] == "stage1"]
    assert max(stage1_lr) == pytest.approx(2e-3, rel=0.05)  # warmup up to lr, cosine down
    assert stage1_lr[-1] < 0.2 * max(stage1_lr)


def test_checkpoints_hold_the_whole_state(run):
    assert ckpt.saved_epochs(run) == [1, 2, 3, 4, 5, 6]
    state = ckpt.load_checkpoint(run, 5)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "step", "stage"} <= set(state)
    assert state["epoch"] == 5 and state["stage"] == "stage2"


def test_exported_bundle_loads_and_detects_toy_fakes(run):
    manifest = read_manifest(run / "bundle")
    assert [e.name for e in manifest.ensemble.experts] == ["clip-tiny-a"]
    assert manifest.ensemble.version == "tiny-toy-v1"
    prov = manifest.provenance
    assert prov["epochs"] == {"stage1": 3, "stage2": 3, "teacher_epoch": 1}
    assert prov["config"]["stage2"]["distill_weight"] == 5.0
    assert prov["data"]["split"]["kind"] == "ratio" and len(prov["metrics"]["history"]) == 6
    detector = Detector.load(run / "bundle")
    items = toy_items(40, 32, seed=99)  # images the run never saw
    scores = detector.predict([render(uri) for uri, _, _ in items])
    labels = np.array([label for _, label, _ in items])
    accuracy = np.mean([(s.score >= 0.5) == y for s, y in zip(scores, labels)])
    assert accuracy > 0.85


@pytest.mark.parametrize("resume_from", [4, 3])  # inside stage 2, and at the stage boundary
def test_resume_reproduces_the_uninterrupted_run(run, tmp_path, resume_from):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "bundle")
    for epoch in ckpt.saved_epochs(copy):
        if epoch > resume_from:
            ckpt.checkpoint_path(copy, epoch).unlink()
    assert main(["train", str(EXAMPLE), "--out", str(copy), "--resume", *ARGS]) == 0
    assert untimed(records(copy, "step")) == untimed(records(run, "step"))  # losses, lr, norms
    expected = load_file(str(next((run / "bundle").glob("*.safetensors"))))
    got = load_file(str(next((copy / "bundle").glob("*.safetensors"))))
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_teacher_is_frozen_in_eval_mode_and_from_its_epoch(run):
    config = load_config(EXAMPLE, ARGS[1::2])
    model = build_expert(config)
    model.load_state_dict(ckpt.load_checkpoint(run, 3)["model"])
    split = split_samples(read_sources(config.data.sources), config.data.split)
    stage = setup_stage("stage2", config, model, split, run, torch.device("cpu"))
    assert stage.teacher is not None and not stage.teacher.training
    assert not any(p.requires_grad for p in stage.teacher.parameters())
    teacher_state = ckpt.load_checkpoint(run, 1)["model"]
    assert all(torch.equal(v, teacher_state[k]) for k, v in stage.teacher.state_dict().items())
    assert stage.blocks == [1] and stage.loader.dataset.policy.aligned_only


def test_head_only_with_accumulation_and_workers(tmp_path):
    """trainable_blocks = none leaves the backbone as built; accumulate = 2 halves the optimizer
    steps; DataLoader workers decode the very same batches as the main process."""
    small = ["--set", "data.sources=[{kind: toy, count: 48, image_size: 32}]", "--set",
             "stage1.epochs=1", "--set", "stage2.epochs=0", "--set", "stage1.trainable_blocks=none",
             "--set", "accumulate=2", "--set", "log_every=1"]
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        assert main(["train", str(EXAMPLE), "--out", str(out), *small,
                     "--set", f"data.num_workers={workers}"]) == 0
    steps = [untimed(records(tmp_path / f"w{w}", "step")) for w in (0, 2)]
    assert steps[0] == steps[1]
    config = load_config(EXAMPLE, small[1::2])
    n_train = len(split_samples(read_sources(config.data.sources), config.data.split).train)
    assert len(steps[0]) == -(-(-(-n_train // 16)) // 2)  # ceil(ceil(n / batch) / accumulate)
    torch.manual_seed(config.seed)
    initial = build_expert(config).state_dict()
    trained = load_file(str(next((tmp_path / "w0" / "bundle").glob("*.safetensors"))))
    assert all(torch.equal(initial[k], trained[k]) for k in initial if k.startswith("backbone."))
    assert not all(torch.equal(initial[k], trained[k]) for k in initial if k.startswith("head."))


def test_fresh_run_refuses_a_folder_with_checkpoints(run, capsys):
    assert main(["train", str(EXAMPLE), "--out", str(run), *ARGS]) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_config_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[expert]\npreset = 'tiny:nope'\n[data]\n[stage1]\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_train_then_eval_end_to_end(run, tmp_path):
    manifest = write_toy_dataset(tmp_path / "data", count=24, size=32, seed=7)
    out = tmp_path / "report"
    assert main(["eval", "--bundle", str(run / "bundle"), "--data", str(manifest),
                 "--out", str(out), "--degrade", "noise", "--levels", "mild"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bundles"][0]["overall"]["ensemble"]["auc"] > 0.9
    assert (out / "roc.png").is_file() and (out / "robustness.png").is_file()


def test_cli_degrade_writes_a_contact_sheet(tmp_path):
    src = tmp_path / "img.png"
    render("toy:real:48:1").save(src)
    assert main(["degrade", "--show", str(src), "--out", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_setting_added_after_the_checkpoint_matches_only_at_its_default():
    """Resume compares the checkpoint's config with the current one: a setting the code gained
    later (absent from the checkpoint) matches when it holds its default, as the older code
    behaved; a changed value, or a setting the code dropped, names itself."""
    config = load_config(EXAMPLE, ARGS[1::2])
    saved = comparable_config(config)  # a fresh dict: editing it leaves config alone
    del saved["expert"]["shared_blocks"], saved["low_rank"]
    assert resume_mismatch(saved, config) is None
    deeper = load_config(EXAMPLE, [*ARGS[1::2], "expert.shared_blocks=1"])
    assert resume_mismatch(saved, deeper) == "expert.shared_blocks"
    saved["stage1"]["epochs"] = 9
    assert resume_mismatch(saved, config) == "stage1.epochs"
    saved["stage1"]["epochs"] = config.stage1.epochs
    saved["expert"]["retired_knob"] = 1
    assert resume_mismatch(saved, config) == "expert.retired_knob"
    assert resume_mismatch(None, config) is not None  # a checkpoint without a config


def test_resume_goes_on_from_a_checkpoint_older_than_a_setting(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "bundle")
    ckpt.checkpoint_path(copy, 6).unlink()
    path = ckpt.checkpoint_path(copy, 5)
    state = torch.load(path, weights_only=False)
    del state["config"]["expert"]["shared_blocks"]  # as written before the setting existed
    torch.save(state, path)
    assert main(["train", str(EXAMPLE), "--out", str(copy), "--resume", *ARGS]) == 0
    assert untimed(records(copy, "step")) == untimed(records(run, "step"))
    bad = [*ARGS, "--set", "stage2.distill_weight=1.0"]
    assert main(["train", str(EXAMPLE), "--out", str(copy), "--resume", *bad]) != 0
