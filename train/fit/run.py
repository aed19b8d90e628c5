"""A whole training run: build the expert and the data, run both stages, resume, export a bundle.

Epochs are numbered across the run: stage 1 is epochs 1..E1, stage 2 is E1+1..E1+E2. After every
epoch a checkpoint is written (train.fit.checkpoint); stage 2's teacher is the model of the checkpoint
of `teacher_epoch`. The run folder holds config.json, metrics.jsonl, checkpoints/ and, at the end,
bundle/: a one-expert bundle for `featdistill bundle compose`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detector.adapter import save_adapter, tensors_sha256
from detector.bundle import save_bundle
from detector.expert import Expert
from detector.service import resolve_device
from detector.spec import EnsembleSpec
from train.fit import checkpoint as ckpt
from train.fit.config import TrainConfig, to_dict
from train.fit.provenance import provenance as run_provenance
from train.data.records import Split, read_sources, sampling_weights, split_samples
from train.fit.freeze import apply_trainable, freeze, trainable_names
from train.fit.loop import MetricsLog, Stage, make_optimizer, make_scheduler, run_epoch, validate
from train.fit.losses import resolve_blocks
from train.fit.low_rank import add_low_rank, freeze_originals, low_rank_deltas, merge
from train.data.samples import EpochSampler, ViewDataset, make_loader
from train.data.prepared import PreparedViews
from train.data.view_bank import BankDataset, build_bank

# Settings that may change between an interrupted run and its resume without changing the result.
_RESUMABLE_CHANGES = {"out_dir", "device", "log_every", "keep_checkpoints", "val_batch_size"}


class RunError(RuntimeError):
    """The run cannot start or continue as asked (one line for the CLI)."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    bundle_dir: Path
    history: list[dict[str, Any]]  # epoch records from metrics.jsonl


def build_expert(config: TrainConfig) -> Expert:
    spec = config.expert.resolve()
    expert = Expert.build(spec, config.expert.pretrained or None)  # records a folder's config
    if config.low_rank.rank:
        lr = config.low_rank
        add_low_rank(expert, config.stage1.trainable_blocks, lr.rank, lr.alpha or lr.rank)
    return expert


def comparable_config(config: TrainConfig) -> dict[str, Any]:
    """The config as a checkpoint records it: without the settings a resume may change."""
    d = to_dict(config)
    d["data"] = {k: v for k, v in d["data"].items() if k != "num_workers"}
    return {k: v for k, v in d.items() if k not in _RESUMABLE_CHANGES}


def _field_defaults(config: Any) -> dict[str, Any]:
    """Each field's default, nested like to_dict (MISSING where a field has none)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _field_defaults(value)
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = dataclasses.MISSING
    return out


def resume_mismatch(saved: dict[str, Any] | None, config: TrainConfig) -> str | None:
    """The setting (dotted name) in which `config` differs from the config a checkpoint was
    written with (`saved`), or None when the run may resume."""
    return _difference(saved or {}, comparable_config(config), _field_defaults(config))


def _difference(saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any],
                prefix: str = "") -> str | None:
    """The dotted name of the first setting where a checkpoint's config and the current one differ,
    or None. A setting the checkpoint lacks matches when it holds its default: it was added to
    the code after the checkpoint was written, and its default is how that older code behaved
    (expert.shared_blocks = -1 keeps the preset's trunk), so adding a setting does not strand the
    runs in progress."""
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        default = defaults.get(key, dataclasses.MISSING)
        if key not in current:
            return name  # a setting this code no longer has
        if key not in saved:
            if current[key] != default:  # a nested default is a dict, as to_dict writes it
                return name
        elif isinstance(saved[key], dict) and isinstance(current[key], dict):
            inner = _difference(saved[key], current[key],
                                default if isinstance(default, dict) else {}, name + ".")
            if inner:
                return inner
        elif saved[key] != current[key]:
            return name
    return None


@dataclass(frozen=True)
class Banks:
    """One view bank (train.data.view_bank) over the whole pool, and the rows of each split in it."""

    bank: Any
    train: list[int]
    val: list[int]


def _check_bank_fits(config: TrainConfig, model: Expert) -> None:
    """Everything that trains must lie after the banked trunk, or the bank would be stale."""
    shared, n = model.spec.shared_blocks, model.backbone.num_blocks()
    if shared <= 0:
        raise RunError("data.view_bank needs an expert whose spec sets shared_blocks > 0")
    for name, cfg in (("stage1", config.stage1), ("stage2", config.stage2)):
        tb = cfg.trainable_blocks
        if cfg.epochs and (tb == "all" or (tb != "none" and int(tb) > n - shared)):
            raise RunError(f"{name}.trainable_blocks={tb!r} reaches into the {shared} shared "
                           f"blocks of the view bank: at most {n - shared}")
        if cfg.epochs and any(b < shared for b in resolve_blocks(cfg.distill_blocks, n)):
            raise RunError(f"{name}.distill_blocks must be at or after block {shared}")


def make_banks(config: TrainConfig, split: Split, model: Expert, run_dir: Path,
               device: torch.device) -> Banks | None:
    """The bank covers the pool (training and held-out images, in key order), not the split: runs
    that differ only in what they hold out (leave-one-generator-out folds) share one bank. The
    held-out images are validated on their view 0 (prepared, not degraded)."""
    vb = config.data.view_bank
    if not vb.views:
        return None
    _check_bank_fits(config, model)
    folder = Path(vb.dir) if vb.dir else run_dir / "view-bank"
    pool = sorted(split.train + split.val, key=lambda s: (s.key, s.origin))
    prepared = (PreparedViews(vb.prepared, config.data.prep, model.spec.preprocess.size, vb.seed)
                if vb.prepared else None)
    bank = build_bank(pool, model, vb.views, folder, prep=config.data.prep,
                      policy=dataclasses.replace(config.data.degrade, aligned_only=True),
                      dtype=vb.dtype, batch_size=vb.batch_size,
                      num_workers=config.data.num_workers, device=device, seed=vb.seed,
                      prepared=prepared)
    row = {(s.key, s.origin): i for i, s in enumerate(pool)}
    return Banks(bank, [row[(s.key, s.origin)] for s in split.train],
                 [row[(s.key, s.origin)] for s in split.val])


def _stage_loader(config: TrainConfig, split: Split, spec, two_views: bool, banks: Banks | None):
    weights = sampling_weights(split.train, [s.weight for s in config.data.sources], config.data.balance)
    if banks is not None:
        dataset = BankDataset(banks.bank, split.train, banks.train, config.seed, two_views)
        workers = 0  # a memmap read: nothing worth a process
    else:
        policy = config.data.degrade
        if two_views:
            policy = dataclasses.replace(policy, aligned_only=True)
        dataset = ViewDataset(split.train, spec.preprocess, policy, config.data.prep, config.seed,
                              two_views)
        workers = config.data.num_workers
    sampler = EpochSampler(len(dataset), config.data.samples_per_epoch, weights, config.seed)
    return make_loader(dataset, config.batch_size, workers, sampler, config.seed)


def _val_loader(config: TrainConfig, split: Split, spec, banks: Banks | None):
    if not split.val:
        return None
    if banks is not None:
        return make_loader(BankDataset(banks.bank, split.val, banks.val), config.val_batch_size, 0)
    return make_loader(ViewDataset(split.val, spec.preprocess), config.val_batch_size,
                       config.data.num_workers, seed=config.seed)


def setup_stage(name: str, config: TrainConfig, model: Expert, split: Split,
                run_dir: Path, device: torch.device, banks: Banks | None = None) -> Stage:
    cfg = config.stage1 if name == "stage1" else config.stage2
    params = apply_trainable(model, cfg.trainable_blocks)
    if config.low_rank.rank:
        freeze_originals(model)
        params = [p for p in model.parameters() if p.requires_grad]
    two_views = name == "stage2" and cfg.distill_weight > 0
    loader = _stage_loader(config, split, model.spec, two_views, banks)
    optimizer = make_optimizer(params, cfg)
    steps = cfg.epochs * -(-len(loader) // config.accumulate)
    stage = Stage(name, cfg, model, optimizer, make_scheduler(optimizer, cfg, steps), loader, device,
                  config.accumulate, config.clip_grad, precision=config.precision)
    if two_views:
        teacher = copy.deepcopy(model)  # a copy, not a rebuild: building would draw from the RNG
        teacher.load_state_dict(ckpt.load_checkpoint(run_dir, config.teacher_epoch)["model"])
        stage.teacher = freeze(teacher).to(device)
        stage.blocks = resolve_blocks(cfg.distill_blocks, model.backbone.num_blocks())
    return stage


def _start(config: TrainConfig, run_dir: Path, model: Expert, resume: bool, log: MetricsLog):
    """Load the latest checkpoint when resuming; returns (checkpoint or None, epoch, step)."""
    done = ckpt.latest_epoch(run_dir) if resume else None
    if not resume and ckpt.latest_epoch(run_dir) is not None:
        raise RunError(f"{run_dir} already holds checkpoints: pass --resume, or choose another --out")
    if done is None:
        return None, 0, 0
    state = ckpt.load_checkpoint(run_dir, done)
    differs = resume_mismatch(state.get("config"), config)
    if differs:
        raise RunError(f"{run_dir}: the config differs from the one the checkpoints were made "
                       f"with ({differs}); resume needs the same settings")
    model.load_state_dict(state["model"])
    log.truncate_after(done)
    return state, done, int(state["step"])


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False) -> RunResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = resolve_device(None if config.device == "auto" else config.device)
    log = MetricsLog(run_dir / "metrics.jsonl")
    pool = read_sources(config.data.sources)
    split = split_samples(pool, config.data.split)
    model = build_expert(config)
    state, done, step = _start(config, run_dir, model, resume, log)
    if state is None:
        log.path.write_text("")
    (run_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    model.to(device)
    if config.stage2.epochs and config.teacher_epoch == 0 and 0 not in ckpt.saved_epochs(run_dir):
        ckpt.save_checkpoint(run_dir, 0, model=model.state_dict(), step=0)
    banks = make_banks(config, split, model, run_dir, device)
    val_loader = _val_loader(config, split, model.spec, banks)
    stages = [("stage1", 1, config.stage1.epochs),
              ("stage2", config.stage1.epochs + 1, config.stage1.epochs + config.stage2.epochs)]
    for name, first, last in stages:
        if last < first or last <= done:
            continue
        stage = setup_stage(name, config, model, split, run_dir, device, banks)
        if state is not None:
            if first <= done:  # resuming inside this stage: its optimizer and schedule go on
                stage.optimizer.load_state_dict(state["optimizer"])
                stage.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])  # last, so that setup cannot disturb the streams
            state = None
        for epoch in range(max(first, done + 1), last + 1):
            step, means = run_epoch(stage, epoch, step, log, config.log_every)
            record = {"event": "epoch", "stage": name, "epoch": epoch, "step": step, **means,
                      **validate(model, val_loader, device, config.threshold, config.precision)}
            log.write(record)
            ckpt.save_checkpoint(run_dir, epoch, model=model.state_dict(),
                                 optimizer=stage.optimizer.state_dict(),
                                 scheduler=stage.scheduler.state_dict(), step=step, stage=name,
                                 config=comparable_config(config))
            ckpt.prune(run_dir, config.keep_checkpoints, {config.teacher_epoch})
    history = [r for r in log.records() if r.get("event") == "epoch"]
    bundle_dir = export(config, model, split, history, run_dir / "bundle")
    return RunResult(run_dir, bundle_dir, history)


def export(config: TrainConfig, model: Expert, split: Split, history: list[dict[str, Any]],
           out: Path) -> Path:
    """Write the trained expert as a one-expert bundle, with what made it in the provenance; when
    it started from a pretrained backbone file, also its adapter (adapter.safetensors beside the
    bundle folder: detector.adapter), small when only low-rank deltas, a few blocks or the head
    trained."""
    model = model.to("cpu").eval()
    provenance = run_provenance(config, split, history)
    merged = merge(copy.deepcopy(model))
    ensemble = EnsembleSpec((merged.spec,), config.threshold, config.version)
    pretrained = Path(config.expert.pretrained) if config.expert.pretrained else None
    if pretrained is not None and pretrained.is_file():
        export_adapter(config, model, merged, ensemble, pretrained, out.parent / "adapter.safetensors",
                       provenance)
    save_bundle(out, ensemble, [merged], provenance)
    return out


def export_adapter(config: TrainConfig, model: Expert, merged: Expert, ensemble: EnsembleSpec,
                   backbone_file: Path, path: Path, provenance: dict[str, Any]) -> Path:
    """The expert as its changes to `backbone_file`: low-rank pairs for the adapted matrices
    (scale folded into b), whole tensors for the head and the tuned blocks' other parameters."""
    deltas = {f"backbone.{name}": (d.a, d.b * d.scale) for name, d in low_rank_deltas(model).items()}
    tuned = {f"backbone.{n}" for cfg in (config.stage1, config.stage2) if cfg.epochs
             for n in trainable_names(merged, cfg.trainable_blocks)}
    state = merged.state_dict()
    whole = {k: v for k, v in state.items() if k.startswith("head.") or (k in tuned and k not in deltas)}
    return save_adapter(path, ensemble, [whole], [deltas], tensors_sha256(backbone_file), provenance)
