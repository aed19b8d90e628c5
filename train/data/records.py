"""Training data as plain records: sources (manifests, folders, toy), splits and sampling weights.

A `Sample` names one image and its label; nothing here decodes pixels (see `train.data.samples`).

Sources:
- manifest: CSV or JSON lines with `path` (relative to the manifest's folder), `label` (real/fake
  or 0/1), `generator` (empty for reals) and `source`;
- folder: `real/**` and `fake/<generator>/**`;
- toy: generated images (`train.data.toy`), no files.

Splits are decided per image by a seeded hash of its key (the path as the source names it), not
by shuffling the pool: the same image lands on the same side whatever else the pool holds, so
`featdistill eval --loo` can rebuild a bundle's held-out set from its provenance alone.
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from detector.images import IMAGE_SUFFIXES
from train.data import toy

_LABELS = {"real": 0, "fake": 1, "0": 0, "1": 1}
# Manifest `split` values that training refuses (evaluation may read them).
_NOT_FOR_TRAINING = ("eval_only", "heldout")


class DataError(ValueError):
    """A data source or split that cannot be used as given (one line, names the culprit)."""


@dataclass(frozen=True)
class Sample:
    path: str  # what to open: a file path, or a toy: URI
    label: int  # 0 real, 1 fake (AI-generated)
    generator: str = ""  # "" for real images
    source: str = ""  # the manifest's `source` column (provenance, not used for training)
    key: str = ""  # stable identity for splits: the path as written in the manifest or folder
    origin: int = 0  # index of the configured source it came from (for sampling weights)


@dataclass(frozen=True)
class SourceConfig:
    path: str = ""  # manifest file (.csv, .jsonl) or folder; unused for kind = "toy"
    kind: Literal["auto", "manifest", "folder", "toy"] = "auto"
    weight: float = 1.0  # share of the training draws this source gets, relative to the others
    count: int = 64  # toy only: number of images (half real)
    image_size: int = 32  # toy only: side in pixels (make it the expert's input size)
    seed: int = 0  # toy only
    limit: int = 0  # use at most N images of this source, a fixed hash-chosen subset; 0: all
    # at most N images from each repository or package (the manifest's `source` column), hash-chosen
    # like `limit` and applied before it: one large gallery (2,297 Krea portraits of one
    # composition) must not become most of a class. 0: no cap
    limit_per_source: int = 0

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise DataError(f"source {self.path or self.kind!r}: weight must be > 0")
        if self.kind != "toy" and not self.path:
            raise DataError(f"a {self.kind} source needs a path")


@dataclass(frozen=True)
class SplitConfig:
    kind: Literal["ratio", "leave_out", "none"] = "ratio"
    val_fraction: float = 0.2  # ratio: share of images (either class) held out for validation
    holdout: tuple[str, ...] = ()  # leave_out: generators whose fakes are all held out
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("ratio", "leave_out", "none"):
            raise DataError(f"split kind must be ratio, leave_out or none, got {self.kind!r}")
        if self.kind == "leave_out" and not self.holdout:
            raise DataError("a leave_out split needs holdout = [generator, ...]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def _label(value: Any, where: str) -> int:
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        raise DataError(f"{where}: label must be real/fake or 0/1, got {value!r}")
    return label


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            yield from csv.DictReader(f)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
    else:
        raise DataError(f"{path}: a manifest must be .csv or .jsonl")


def read_manifest(path: str | Path, origin: int = 0, training: bool = False) -> list[Sample]:
    """Samples of a CSV/JSONL manifest. For training, rows marked split=eval_only (sources
    reserved for independent evaluation, see train/sources/DATACARD.md) or split=heldout (the git
    sources' held-out set, whole generators and photo sources kept out of training) are
    refused: point evaluation, not training, at such a manifest."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    samples = []
    for n, row in enumerate(_rows(path), 2):
        split = str(row.get("split") or "").strip()
        if training and split in _NOT_FOR_TRAINING:
            raise DataError(f"{path}: row {n} is reserved for evaluation (split={split}); "
                            "it must not be trained on")
        if not row.get("path"):
            raise DataError(f"{path}: row {n} has no path")
        label = _label(row.get("label"), f"{path} row {n}")
        generator = str(row.get("generator") or "") if label else ""
        key = str(row["path"])
        samples.append(Sample(str(path.parent / key), label, generator,
                              str(row.get("source") or ""), key, origin))
    return samples


def read_folder(root: str | Path, origin: int = 0) -> list[Sample]:
    root = Path(root)
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise DataError(f"{root}: a data folder needs real/ and fake/<generator>/ inside")
    samples = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        parts = path.relative_to(root).parts
        if parts[0] == "real":
            samples.append(Sample(str(path), 0, "", root.name, path.relative_to(root).as_posix(), origin))
        elif parts[0] == "fake" and len(parts) >= 3:
            samples.append(Sample(str(path), 1, parts[1], root.name,
                                  path.relative_to(root).as_posix(), origin))
    return samples


def read_source(cfg: SourceConfig, origin: int = 0, training: bool = True) -> list[Sample]:
    if cfg.kind == "toy":
        return [Sample(uri, label, gen, "toy", uri, origin)
                for uri, label, gen in toy.toy_items(cfg.count, cfg.image_size, cfg.seed)]
    path = Path(cfg.path)
    kind = cfg.kind if cfg.kind != "auto" else ("folder" if path.is_dir() else "manifest")
    samples = (read_folder(path, origin) if kind == "folder"
               else read_manifest(path, origin, training=training))
    if not samples:
        raise DataError(f"{path}: no images found")
    return subsample(cap_per_source(samples, cfg.limit_per_source), cfg.limit, 0)


def read_sources(sources: Sequence[SourceConfig]) -> list[Sample]:
    if not sources:
        raise DataError("no data sources configured")
    return [s for i, cfg in enumerate(sources) for s in read_source(cfg, i)]


def hash_unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, key): the split's coin for one image."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Split:
    train: list[Sample]
    val: list[Sample]
    info: dict[str, Any]  # enough to rebuild `val` from the same pool: see heldout()


def split_samples(samples: Sequence[Sample], cfg: SplitConfig) -> Split:
    """Ratio: each image is held out with p = val_fraction. Leave-out: the named generators' fakes
    are held out, with the same share of reals as those fakes are of all fakes."""
    info: dict[str, Any] = {"kind": cfg.kind, "seed": cfg.seed}
    if cfg.kind == "none":
        return Split(list(samples), [], info)
    if cfg.kind == "ratio":
        info["real_fraction"] = info["fake_fraction"] = cfg.val_fraction
    else:
        generators = {s.generator for s in samples if s.label}
        unknown = sorted(set(cfg.holdout) - generators)
        if unknown:
            raise DataError(f"holdout generators {unknown} are not in the data ({sorted(generators)})")
        fakes = [s for s in samples if s.label]
        held = sum(s.generator in cfg.holdout for s in fakes)
        info["holdout"] = sorted(cfg.holdout)
        info["real_fraction"] = held / len(fakes)
    val = heldout(samples, info)
    keep = {id(s) for s in val}
    return Split([s for s in samples if id(s) not in keep], val, info)


def heldout(samples: Sequence[Sample], info: dict[str, Any]) -> list[Sample]:
    """The validation part of `samples` under a split recorded by split_samples."""
    if info.get("kind") not in ("ratio", "leave_out"):
        return []
    seed = int(info["seed"])

    def held(s: Sample) -> bool:
        if info["kind"] == "leave_out" and s.label:
            return s.generator in info["holdout"]
        fraction = info["real_fraction"] if not s.label else info["fake_fraction"]
        return hash_unit(s.key, seed) < fraction

    return [s for s in samples if held(s)]


def sampling_weights(samples: Sequence[Sample], source_weights: Sequence[float],
                     balance: bool) -> np.ndarray:
    """Per-image draw probabilities. Each source's mass is proportional to its weight (spread
    evenly over its images); with balance, masses are then rescaled so real and fake draws are
    equally likely overall, each class keeping the sources' relative weights."""
    if not samples:
        raise DataError("the training split is empty")
    sizes = Counter(s.origin for s in samples)
    w = np.array([source_weights[s.origin] / sizes[s.origin] for s in samples], dtype=np.float64)
    if balance:
        labels = np.array([s.label for s in samples])
        for label in (0, 1):
            mass = w[labels == label].sum()
            if mass == 0:
                raise DataError(f"class balancing needs both classes; the training split has no "
                                f"{'fake' if label else 'real'} images")
            w[labels == label] *= 0.5 / mass
    return w / w.sum()


def describe(samples: Sequence[Sample]) -> dict[str, Any]:
    """Counts for logs and provenance: reals, fakes, fakes per generator."""
    gens = Counter(s.generator for s in samples if s.label)
    return {"images": len(samples), "real": sum(not s.label for s in samples),
            "fake": sum(gens.values()), "generators": dict(sorted(gens.items()))}


def cap_per_source(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """At most `limit` samples of each `source` value, chosen as `subsample` chooses; the order of
    the samples kept is unchanged."""
    if limit <= 0:
        return list(samples)
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    kept = {id(s) for group in by_source.values() for s in subsample(group, limit, 0)}
    return [s for s in samples if id(s) in kept]


def subsample(samples: Sequence[Sample], limit: int, seed: int) -> list[Sample]:
    """At most `limit` samples, chosen by the split hash (stable, roughly class-proportional)."""
    if limit <= 0 or limit >= len(samples):
        return list(samples)
    ranked = sorted(samples, key=lambda s: hash_unit(s.key, seed + 7919))
    return ranked[:limit]
