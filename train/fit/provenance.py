"""What made a trained expert, as its bundle and adapter record it.

Portable on purpose: a model trained on one machine and shipped to others names its data by
source (the manifests' `source` column: `owner/repo@commit` for the git sources, the package and
version for registry ones) and counts, and its files by name, never by the trainer's absolute
paths (starter-v1's adapter carried its trainer's cache and data folders, which say nothing on
another machine and leak the trainer's layout; its metadata has since been rewritten with
`portable`)."""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import PurePath
from typing import Any, Sequence

from train.data.records import Sample, SourceConfig, Split, describe
from train.fit.config import TrainConfig, to_dict


def portable(value: Any) -> Any:
    """`value` with every absolute path replaced by its last part (the file or folder name)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str) and len(value) > 1 and PurePath(value).is_absolute():
        return PurePath(value).name
    return value


def data_sources(sources: Sequence[SourceConfig], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Each configured source as its name, weight and limit, and the images it gave by their own
    `source` (repository@commit, package): what a user needs to rebuild the same data."""
    out = []
    for i, cfg in enumerate(sources):
        entry = portable(dataclasses.asdict(cfg))
        entry["images_by_source"] = dict(sorted(Counter(
            s.source or "(unnamed)" for s in samples if s.origin == i).items()))
        out.append(entry)
    return out


def provenance(config: TrainConfig, split: Split, history: list[dict[str, Any]]) -> dict[str, Any]:
    train_gens = describe(split.train)["generators"]
    return {
        "trainer": "featdistill train",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": portable(to_dict(config)),
        "data": {"sources": data_sources(config.data.sources, split.train + split.val),
                 "split": split.info, "train": describe(split.train), "val": describe(split.val),
                 "train_generators": sorted(train_gens)},
        "epochs": {"stage1": config.stage1.epochs, "stage2": config.stage2.epochs,
                   "teacher_epoch": config.teacher_epoch if config.stage2.epochs else None},
        "metrics": {"final": history[-1] if history else {}, "history": history},
    }
