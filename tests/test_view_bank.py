"""Training on a frozen shared trunk: view banks, low-rank deltas, adapters (tiny CLIP, CPU).

The run mirrors the starter recipe at toy size: a "pretrained" tiny open_clip file, the first
block shared and banked, the last block tuned with rank-2 deltas, both stages.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from detector.adapter import AdapterError, build_from_adapter, read_adapter
from detector.bundle import load_experts
from detector.expert import Expert
from detector.presets import tiny
from detector.service import Detector
from detector.spec import expert_to_dict
from shell.cli import main
from tests.conftest import make_image
from train.fit.config import ConfigError, ExpertConfig, load_config
from train.fit.low_rank import add_low_rank, low_rank_deltas, merge
from train.fit.run import RunError, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train" / "tiny-toy.toml"


def _spec(shared: int = 1) -> dict:
    spec = dataclasses.replace(tiny().experts[0], name="clip-banked", shared_blocks=shared)
    return expert_to_dict(spec)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    expert = Expert.build(dataclasses.replace(tiny().experts[0]))
    path = tmp_path_factory.mktemp("weights") / "tiny-clip.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in expert.backbone.visual.state_dict().items()},
              str(path))
    return path


def _args(pretrained: Path, bank_dir: Path, *extra: str) -> list[str]:
    return ["--set", f"expert={json.dumps({'spec': _spec(), 'pretrained': str(pretrained)})}",
            "--set", "data.sources=[{kind: toy, count: 80, image_size: 32}]",
            "--set", f"data.view_bank={{views: 3, dir: {bank_dir}, dtype: float32}}",
            "--set", "low_rank={rank: 2}", "--set", "precision=float32",
            "--set", "data.degrade={p_degrade: 1.0, max_ops: 1}",
            "--set", "stage1.epochs=2", "--set", "stage1.trainable_blocks=1",
            "--set", "stage2.epochs=1", "--set", "stage2.trainable_blocks=1",
            "--set", "stage2.teacher_epoch=-1", *extra]


def _sets(args: list[str]) -> list[str]:
    return [a for a in args if a != "--set"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, pretrained) -> Path:
    root = tmp_path_factory.mktemp("banked")
    out = root / "run"
    assert main(["train", str(EXAMPLE), "--out", str(out), *_args(pretrained, root / "banks")]) == 0
    return out


def test_one_bank_serves_other_seeds_and_other_splits(run, pretrained, tmp_path):
    banks = sorted((run.parent / "banks").glob("*.npy"))
    assert len(banks) == 1 and banks[0].name.startswith("bank-")
    bank = np.load(banks[0], mmap_mode="r")
    assert bank.dtype == np.float16 and bank.shape == (80, 3, 17, 64)  # the pool: train + val
    assert not np.array_equal(bank[:, 0], bank[:, 1])  # degraded views differ
    stamp = banks[0].stat().st_mtime_ns
    for i, extra in enumerate((["--set", "seed=1"], ["--set", "data.split.val_fraction=0.5"])):
        args = _args(pretrained, run.parent / "banks", *extra)
        assert main(["train", str(EXAMPLE), "--out", str(tmp_path / f"other{i}"), *args]) == 0
    assert [p.stat().st_mtime_ns for p in (run.parent / "banks").glob("*.npy")] == [stamp]


def test_banked_run_trains_both_stages(run):
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    assert [r["stage"] for r in epochs] == ["stage1", "stage1", "stage2"]
    assert epochs[-1]["distill"] > 0 and epochs[-1]["val_images"] > 0


def test_trunk_stays_pretrained_and_tail_moves_by_low_rank(run, pretrained):
    expert = load_experts(run / "bundle")[0]
    base = Expert.build(expert.spec, pretrained)
    got, ref = expert.backbone.state_dict(), base.backbone.state_dict()
    for k in ref:
        if ".resblocks.0." in k or "conv1" in k or "positional" in k:
            assert torch.equal(got[k], ref[k]), k
    delta = got["visual.transformer.resblocks.1.mlp.c_fc.weight"] - ref["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    assert delta.abs().max() > 0
    assert torch.linalg.matrix_rank(delta, atol=1e-5) <= 2


def test_adapter_rebuilds_the_exported_bundle(run, pretrained, tmp_path):
    adapter = run / "adapter.safetensors"
    ensemble, tensors, meta = read_adapter(adapter)
    assert [e.name for e in ensemble.experts] == ["clip-banked"]
    assert any(k.endswith("::lora_a") for k in tensors["clip-banked"])
    assert not any(".resblocks.0." in k for k in tensors["clip-banked"])  # the trunk is not in it
    assert adapter.stat().st_size < 0.5 * sum(p.stat().st_size for p in (run / "bundle").glob("*.safetensors"))
    assert main(["bundle", "from-adapter", str(adapter), "--backbone", str(pretrained),
                 "--out", str(tmp_path / "rebuilt")]) == 0
    images = [make_image(40, 40, seed=i) for i in range(6)]
    a = Detector.load(run / "bundle").expert_probabilities(images)
    b = Detector.load(tmp_path / "rebuilt").expert_probabilities(images)
    assert torch.allclose(a, b, atol=1e-5)


def test_adapter_refuses_another_backbone(run, tmp_path):
    other = tmp_path / "other.safetensors"
    torch.manual_seed(9)
    expert = Expert.build(tiny().experts[0])
    save_file({f"visual.{k}": v.contiguous() for k, v in expert.backbone.visual.state_dict().items()},
              str(other))
    with pytest.raises(AdapterError, match="not the backbone"):
        build_from_adapter(run / "adapter.safetensors", other, tmp_path / "b")


def test_combined_adapters_make_one_ensemble(run, pretrained, tmp_path):
    second = tmp_path / "second.safetensors"
    ensemble, tensors, meta = read_adapter(run / "adapter.safetensors")
    from detector.adapter import save_adapter
    spec = dataclasses.replace(ensemble.experts[0], name="clip-banked-2")
    whole = {k: v for k, v in tensors["clip-banked"].items() if "::" not in k}
    save_adapter(second, dataclasses.replace(ensemble, experts=(spec,)), [whole], [{}],
                 meta["backbone_sha256"], json.loads(meta["provenance"]))
    out = tmp_path / "both.safetensors"
    assert main(["bundle", "combine-adapters", str(run / "adapter.safetensors"), str(second),
                 "--out", str(out), "--version", "two", "--threshold", "0.4"]) == 0
    manifest = build_from_adapter(out, pretrained, tmp_path / "bundle")
    assert [e.name for e in manifest.ensemble.experts] == ["clip-banked", "clip-banked-2"]
    assert manifest.ensemble.threshold == 0.4
    assert manifest.provenance["data"]["split"]["kind"] == "ratio"  # eval --loo can rebuild it
    detector = Detector.load(tmp_path / "bundle")
    assert detector.groups == [[0, 1]]  # shared trunk recognised: one pass for both


def test_bank_refuses_a_trainable_trunk(pretrained, tmp_path):
    config = load_config(EXAMPLE, _sets(_args(pretrained, tmp_path / "banks", "--set",
                                              "stage1.trainable_blocks=2", "--set", "low_rank={rank: 0}")))
    with pytest.raises(RunError, match="reaches into"):
        train(config, tmp_path / "run")


def test_expert_config_overrides_the_shared_trunk_of_a_preset():
    starter_a = ExpertConfig(preset="starter:starter-a")
    assert starter_a.resolve().shared_blocks == 10  # -1 keeps the preset's trunk
    deeper = dataclasses.replace(starter_a, shared_blocks=8).resolve()
    assert deeper.shared_blocks == 8
    assert dataclasses.replace(deeper, shared_blocks=10) == starter_a.resolve()


def test_low_rank_needs_one_trainable_setting(pretrained, tmp_path):
    with pytest.raises(ConfigError, match="low_rank"):
        load_config(EXAMPLE, _sets(_args(pretrained, tmp_path, "--set", "stage2.trainable_blocks=2")))


def test_low_rank_starts_at_the_pretrained_weights_and_merges(pretrained):
    torch.manual_seed(0)
    expert = Expert.build(tiny().experts[0], pretrained).eval()
    x = torch.randn(2, 3, 32, 32)
    before = expert(x)[0]
    names = add_low_rank(expert, 1, rank=2, alpha=2)
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in names
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in names
    assert torch.allclose(expert(x)[0], before)  # b starts at zero
    for d in low_rank_deltas(expert).values():
        torch.nn.init.normal_(d.b)
    tuned = expert(x)[0]
    merge(expert)
    assert not low_rank_deltas(expert)
    assert torch.allclose(expert(x)[0], tuned, atol=1e-5)


def test_bfloat16_on_cpu_is_close_to_float32(tiny_bundle):
    images = [make_image(40, 40, seed=i) for i in range(4)]
    exact = Detector.load(tiny_bundle).expert_probabilities(images)
    fast = Detector.load(tiny_bundle, dtype="bfloat16").expert_probabilities(images)
    assert (exact - fast).abs().max() < 0.05
    with pytest.raises(ValueError, match="CUDA"):
        Detector.load(tiny_bundle, dtype="float16")


def test_linear_probe_head():
    from detector.presets import univfd
    head = Expert.build(univfd().experts[0]).head
    assert [type(m).__name__ for m in head] == ["Linear"]


def test_adapter_accepts_the_same_weights_saved_with_other_metadata(run, pretrained, tmp_path):
    from safetensors.torch import load_file

    resaved = tmp_path / "resaved.safetensors"
    save_file(load_file(str(pretrained)), str(resaved), metadata={"note": "converted again"})
    assert resaved.read_bytes() != pretrained.read_bytes()
    build_from_adapter(run / "adapter.safetensors", resaved, tmp_path / "bundle")


def test_head_only_run_exports_a_head_only_adapter(pretrained, tmp_path):
    args = _args(pretrained, tmp_path / "banks", "--set", "low_rank={rank: 0}",
                 "--set", "stage1.trainable_blocks=none", "--set", "stage1.epochs=1",
                 "--set", "stage2.epochs=0")
    assert main(["train", str(EXAMPLE), "--out", str(tmp_path / "run"), *args]) == 0
    _, tensors, _ = read_adapter(tmp_path / "run" / "adapter.safetensors")
    assert tensors["clip-banked"] and all(k.startswith("head.") for k in tensors["clip-banked"])


def test_provenance_names_no_path_of_the_training_machine(run, pretrained):
    """Adapters ship to other machines: their provenance names files, never the trainer's paths."""
    meta = read_adapter(run / "adapter.safetensors")[-1]
    text = json.dumps(meta)
    for folder in {str(pretrained.parent), str(run.parent), str(Path.home())}:
        assert folder not in text
    assert json.loads(meta["provenance"])["config"]["expert"]["pretrained"] == pretrained.name
