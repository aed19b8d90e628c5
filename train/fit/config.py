"""A training run as frozen dataclasses, read from TOML or YAML.

The file's tables map one-to-one onto the dataclasses below (unknown keys are errors, naming the
key); see examples/train/ for complete files. `--set a.b=value` overrides are applied to the raw
mapping before it is built, with the value read as YAML (`--set split.holdout=[dalle-mini]`).
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import yaml

from detector.presets import PRESETS
from detector.spec import ExpertSpec, SpecError, expert_from_dict
from train.data.records import SourceConfig, SplitConfig
from train.data.samples import PrepConfig
from train.data.view_bank import ViewBankConfig
from train.degrade.catalogue import DegradationPolicy


class ConfigError(ValueError):
    """The config file cannot describe a run; the message names the file and the key."""


@dataclass(frozen=True)
class ExpertConfig:
    preset: str = ""  # "<preset>:<expert name>", e.g. "tiny:clip-tiny-a", "paper:clip-l14-a"
    spec: dict[str, Any] = field(default_factory=dict)  # or an inline ExpertSpec (manifest form)
    name: str = ""  # rename the expert (names must be unique when bundles are composed)
    pretrained: str = ""  # local backbone weights: open_clip checkpoint file or HF model folder
    # Override the spec's frozen shared trunk (-1 keeps it): a shallower trunk leaves more blocks
    # to tune (the starter's 10 shared with trainable_blocks 2; 8 with 4 tunes blocks 8 to 11).
    shared_blocks: int = -1

    def resolve(self) -> ExpertSpec:
        if bool(self.preset) == bool(self.spec):
            raise ConfigError("expert: give exactly one of preset or spec")
        if self.spec:
            try:
                spec = expert_from_dict(self.spec)
            except SpecError as exc:
                raise ConfigError(f"expert.spec: {exc}") from exc
        else:
            preset, _, name = self.preset.partition(":")
            if preset not in PRESETS:
                raise ConfigError(f"expert.preset: unknown preset {preset!r} ({sorted(PRESETS)})")
            specs = {e.name: e for e in PRESETS[preset]().experts}
            if name not in specs:
                raise ConfigError(f"expert.preset: {preset} has no expert {name!r} ({sorted(specs)})")
            spec = specs[name]
        if self.shared_blocks >= 0:
            spec = dataclasses.replace(spec, shared_blocks=self.shared_blocks)
        return dataclasses.replace(spec, name=self.name) if self.name else spec


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[SourceConfig, ...] = ()
    split: SplitConfig = SplitConfig()
    balance: bool = True  # draw real and fake equally often (weighted sampler)
    samples_per_epoch: int = 0  # draws per epoch; 0: the size of the training split
    prep: PrepConfig = PrepConfig()  # confound breaking, both classes alike
    degrade: DegradationPolicy = DegradationPolicy()  # stage 2 forces aligned_only on it
    num_workers: int = 0  # DataLoader decoding processes
    view_bank: ViewBankConfig = ViewBankConfig()  # train on a frozen shared trunk's cached output


@dataclass(frozen=True)
class StageConfig:
    epochs: int = 0  # 0 skips the stage
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 0  # linear warmup (optimizer steps), then cosine to lr * min_lr_ratio
    min_lr_ratio: float = 0.0
    trainable_blocks: Union[str, int] = "all"  # "all", "none" (head only) or the last N blocks
    distill_weight: float = 0.0  # stage 2: weight of the dense self-distillation loss
    distill_blocks: tuple[int, ...] = ()  # stage 2: 0-based block indices; negative from the end
    teacher_epoch: int = -1  # stage 2: epoch whose checkpoint is the teacher; -1: stage 1's last

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0:
            raise ConfigError("stage: epochs must be >= 0 and lr > 0")
        tb = self.trainable_blocks
        if not (tb in ("all", "none") or (isinstance(tb, int) and not isinstance(tb, bool) and tb >= 0)):
            raise ConfigError(f"trainable_blocks must be 'all', 'none' or N >= 0, got {tb!r}")


@dataclass(frozen=True)
class LowRankConfig:
    """Train the trainable blocks' matrices as low-rank deltas (train.fit.low_rank); 0: in full."""

    rank: int = 0
    alpha: float = 0.0  # delta scale is alpha / rank; 0: alpha = rank (scale 1)

    def __post_init__(self) -> None:
        if self.rank < 0 or self.alpha < 0:
            raise ConfigError("low_rank: rank and alpha must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    expert: ExpertConfig
    data: DataConfig
    stage1: StageConfig
    stage2: StageConfig = StageConfig()
    version: str = "unversioned"  # model version written into the exported bundle
    threshold: float = 0.5  # decision threshold written into the bundle
    out_dir: str = "runs/train"  # run folder: checkpoints, metrics.jsonl, bundle/
    seed: int = 0
    batch_size: int = 32
    accumulate: int = 1  # micro-batches per optimizer step
    clip_grad: float = 1.0  # max gradient norm; 0 disables clipping
    device: str = "auto"  # auto: cuda if available, else cpu
    log_every: int = 10  # optimizer steps between metrics lines
    keep_checkpoints: int = 0  # keep the last N epoch checkpoints (+ the teacher's); 0: all
    val_batch_size: int = 64
    low_rank: LowRankConfig = LowRankConfig()
    # training forward passes (detector.precision): auto is bfloat16 on CUDA, float32 on CPU;
    # fast adds bfloat16 on CPUs that compute it natively
    precision: Literal["auto", "fast", "float32", "bfloat16"] = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.accumulate < 1:
            raise ConfigError("batch_size and accumulate must be >= 1")
        if self.precision not in ("auto", "fast", "float32", "bfloat16"):
            raise ConfigError(
                f"precision must be auto, fast, float32 or bfloat16, got {self.precision!r}")
        if self.low_rank.rank:
            blocks = {self.stage1.trainable_blocks} | (
                {self.stage2.trainable_blocks} if self.stage2.epochs else set())
            if len(blocks) != 1 or blocks & {"none"}:
                raise ConfigError("low_rank needs the same trainable_blocks (a number or 'all') "
                                  "in both stages: the deltas are added once, before stage 1")
        s2 = self.stage2
        if s2.epochs:
            if s2.distill_weight > 0 and not s2.distill_blocks:
                raise ConfigError("stage2.distill_blocks: name at least one block to distill")
            if not -1 <= s2.teacher_epoch <= self.stage1.epochs:
                raise ConfigError(f"stage2.teacher_epoch must be in [0, {self.stage1.epochs}] "
                                  "(0: the initial weights) or -1 (stage 1's last epoch)")

    @property
    def teacher_epoch(self) -> int:
        t = self.stage2.teacher_epoch
        return self.stage1.epochs if t < 0 else t


# ------------------------------------------------------------------------------- loading
def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None:  # fixed-length tuple, e.g. tuple[float, float]
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Union, types.UnionType, Literal) or tp is Any:
        return value
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def build(cls: type, raw: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a mapping, recursively; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def read_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    raise ConfigError(f"{path}: a config must be .toml, .yaml or .yml")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`a.b.c=value` items, value parsed as YAML; tables are created as needed."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a table")
        node[leaf] = yaml.safe_load(value)
    return raw


def resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative data and weight paths are relative to the config file's folder."""
    def fix(p: str) -> str:
        return p if not p or Path(p).is_absolute() else str((base / p).resolve())

    for source in raw.get("data", {}).get("sources", []) or []:
        if isinstance(source, dict) and "path" in source:
            source["path"] = fix(str(source["path"]))
    expert = raw.get("expert")
    if isinstance(expert, dict) and expert.get("pretrained"):
        expert["pretrained"] = fix(str(expert["pretrained"]))
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    raw = apply_overrides(read_raw(path), overrides)
    raw = resolve_paths(raw, Path(path).resolve().parent)
    for required in ("expert", "data", "stage1"):
        if required not in raw:
            raise ConfigError(f"{path}: missing table [{required}]")
    try:
        config = build(TrainConfig, raw)
        config.expert.resolve()  # fail now, not after the data is read
        if not config.data.sources:
            raise ConfigError("data.sources: no data sources configured")
        return config
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
