"""Scoring a bundle on labelled data, clean and under degradations, and summarising the numbers.

A condition is "clean", ("jpeg", "q<N>"): plain JPEG re-encoding at quality N (the challenge's
usual yardstick, e.g. q30), ("text", "words"): words drawn onto the image (train.data.text_overlay:
how much a bundle reads text as a sign of AI), or (family, level): every image gets one operation
of that family of the degradation catalogue at that level (mild, medium or severe), the operation
and its random parameters drawn from a generator seeded by (seed, image key, condition), so a
re-run or a subset sees the same degraded pixels. Degradations apply to the decoded image at its
own size, as they would in the wild, before the expert's preprocessing.

Metrics are reported for the ensemble (mean P(fake), as the Detector computes it) and for each
expert: overall, and per generator (that generator's fakes against all reals).
"""
from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detector.preprocess import to_views
from detector.service import Detector
from train.data.records import Sample, heldout
from train.data.samples import open_sample
from train.data.text_overlay import draw_words
from train.degrade.catalogue import OPERATIONS
from train.degrade.ops import jpeg as jpeg_at
from train.evaluate.metrics import binary_metrics, roc_curve
from train.progress import progress_bar

LEVELS = ("mild", "medium", "severe")
ENSEMBLE = "ensemble"


def families() -> list[str]:
    return sorted({op.family for op in OPERATIONS.values()})


@dataclass(frozen=True)
class Condition:
    family: str = ""  # "" = clean
    level: str = ""

    @property
    def name(self) -> str:
        return f"{self.family}/{self.level}" if self.family else "clean"


JPEG = "jpeg"  # the family name of fixed-quality JPEG conditions (not a catalogue family)
TEXT = Condition("text", "words")  # words drawn on every image (not a catalogue family either)


def make_conditions(family_names: Sequence[str], levels: Sequence[str] = LEVELS,
                    jpeg_qualities: Sequence[int] = (), text: bool = False) -> list[Condition]:
    bad_q = [q for q in jpeg_qualities if not 1 <= int(q) <= 100]
    if bad_q:
        raise ValueError(f"JPEG qualities must be in 1..100, got {bad_q}")
    jpeg = [Condition(JPEG, f"q{int(q)}") for q in jpeg_qualities]
    known = families()
    unknown = sorted(set(family_names) - set(known))
    if unknown:
        raise ValueError(f"unknown degradation families {unknown}; known: {known}")
    bad = sorted(set(levels) - set(LEVELS))
    if bad:
        raise ValueError(f"unknown levels {bad}; use {list(LEVELS)}")
    return ([Condition(), *jpeg] + ([TEXT] if text else [])
            + [Condition(f, lv) for f in family_names for lv in levels])


def degrade_family(img, family: str, level: str, rng: np.random.Generator):
    if family == JPEG:
        return jpeg_at(img.convert("RGB"), int(level[1:]), rng)
    if family == TEXT.family:
        return draw_words(img, rng)
    ops = [op for op in OPERATIONS.values() if op.family == family]
    op = ops[int(rng.integers(len(ops)))]
    return op(img.convert("RGB"), op.level_index(level), rng)


class ConditionDataset(Dataset):
    """Item i: {"tensors": [(n_conditions, views, 3, S, S) per distinct PreprocessSpec],
    "index": i}; views: the Detector's test-time augmentation (1: the plain pipeline)."""

    def __init__(self, samples: Sequence[Sample], conditions: Sequence[Condition],
                 preprocess: Sequence, seed: int = 0, views: int = 1) -> None:
        self.samples, self.conditions = list(samples), list(conditions)
        self.preprocess, self.seed, self.views = list(preprocess), seed, views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.samples[i]
        try:
            img = open_sample(sample)
        except (ValueError, OSError) as exc:
            raise RuntimeError(f"{sample.path}: cannot read image ({exc})") from exc
        per_spec: list[list[torch.Tensor]] = [[] for _ in self.preprocess]
        key = zlib.crc32(sample.key.encode())
        for c, cond in enumerate(self.conditions):
            view = img
            if cond.family:
                rng = np.random.default_rng([self.seed, key, zlib.crc32(cond.name.encode())])
                view = degrade_family(img, cond.family, cond.level, rng)
            for j, spec in enumerate(self.preprocess):
                per_spec[j].append(to_views(view, spec, self.views))
        return {"tensors": [torch.stack(t) for t in per_spec], "index": i}


@torch.no_grad()
def score(detector: Detector, samples: Sequence[Sample], conditions: Sequence[Condition],
          batch_size: int = 32, num_workers: int = 0, seed: int = 0) -> np.ndarray:
    """P(fake) of shape (n_conditions, n_experts, n_samples), through the Detector's own batched
    path (shared trunks run once, its dtype, its test-time augmentation)."""
    specs = detector.preprocess_specs
    dataset = ConditionDataset(samples, conditions, specs, seed, detector.tta)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    out = np.zeros((len(conditions), len(detector.experts), len(samples)), dtype=np.float64)
    for batch in progress_bar(loader, "eval", leave=False):
        index = batch["index"].numpy()
        for c in range(len(conditions)):
            inputs = {spec: batch["tensors"][j][:, c].flatten(0, 1) for j, spec in enumerate(specs)}
            out[c][:, index] = detector.probabilities_of(inputs, detector.tta).numpy()
    return out


def write_scores(path: Path, samples: Sequence[Sample], conditions: Sequence[Condition],
                 probs: np.ndarray, names: Sequence[str]) -> Path:
    """Every image's P(fake) under every condition (the ensemble's mean and each expert's), one
    CSV row per image and condition: what a threshold for other photos, or another rate, is
    chosen from without scoring again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["key", "label", "generator", "source", "condition", "score", *names])
        for c, cond in enumerate(conditions):
            mean = probs[c].mean(axis=0)
            for i, s in enumerate(samples):
                out.writerow([s.key, s.label, s.generator, s.source, cond.name, f"{mean[i]:.6g}",
                              *(f"{probs[c][k][i]:.6g}" for k in range(len(names)))])
    return path


def _block(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], threshold: float) -> dict:
    """Metrics of the ensemble (mean over experts) and of each expert; probs (n_experts, n)."""
    return {ENSEMBLE: binary_metrics(labels, probs.mean(axis=0), threshold),
            "experts": {n: binary_metrics(labels, probs[k], threshold) for k, n in enumerate(names)}}


def _per_generator(labels, gens, probs, names, threshold) -> dict:
    out = {}
    for g in sorted({g for g, y in zip(gens, labels) if y}):
        keep = (labels == 0) | (gens == g)
        out[g] = _block(labels[keep], probs[:, keep], names, threshold)
    return out


def _per_source(samples: Sequence[Sample], scores: np.ndarray, threshold: float) -> list[dict]:
    """Share of each source's images called fake at the threshold (for reals: its false-positive
    rate), by repository or package without the commit: the issue's targets are per photo
    source, and one flagged kind of photo (documents, say) hides in a pooled rate."""
    groups: dict[tuple[str, int], list[float]] = {}
    for s, p in zip(samples, scores):
        groups.setdefault((s.source.split("@")[0] or "(unnamed)", s.label), []).append(float(p))
    return [{"source": name, "class": "fake" if label else "real", "n": len(v),
             "flagged": float(np.mean(np.asarray(v) >= threshold)), "median": float(np.median(v))}
            for (name, label), v in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def summarize(probs: np.ndarray, samples: Sequence[Sample], conditions: Sequence[Condition],
              names: Sequence[str], threshold: float) -> dict[str, Any]:
    labels = np.array([s.label for s in samples], dtype=np.int64)
    gens = np.array([s.generator for s in samples], dtype=object)
    clean = probs[0]
    fpr, tpr = roc_curve(labels, clean.mean(axis=0)) if len(set(labels)) == 2 else ([], [])
    report: dict[str, Any] = {
        "n_real": int((labels == 0).sum()), "n_fake": int(labels.sum()), "threshold": threshold,
        "overall": _block(labels, clean, names, threshold),
        "per_generator": _per_generator(labels, gens, clean, names, threshold),
        "per_source": _per_source(samples, clean.mean(axis=0), threshold),
        "roc": {ENSEMBLE: {"fpr": list(map(float, fpr)), "tpr": list(map(float, tpr))}},
        "robustness": [],
    }
    for k, n in enumerate(names):
        if len(set(labels)) == 2:
            f, t = roc_curve(labels, clean[k])
            report["roc"][n] = {"fpr": list(map(float, f)), "tpr": list(map(float, t))}
    for c, cond in enumerate(conditions[1:], start=1):
        block = _block(labels, probs[c], names, threshold)
        per_gen = _per_generator(labels, gens, probs[c], names, threshold)
        block["per_generator_auc"] = {g: v[ENSEMBLE]["auc"] for g, v in per_gen.items()}
        report["robustness"].append({"family": cond.family, "level": cond.level, **block})
    return report


def loo_subset(samples: Sequence[Sample], provenance: dict[str, Any]) -> tuple[list[Sample], list[str]]:
    """The images a bundle did not train on, rebuilt from its provenance's split records, and the
    generators it never saw; empty when the bundle records no held-out part.

    A trained bundle records one split; a combined one (`bundle combine-adapters`, `compose`)
    records one per expert, and an image is unseen only if every expert held it out."""
    records = _data_records(provenance)
    if not records:
        return [], []
    held = [heldout(samples, data["split"]) for data in records]
    common = set.intersection(*(set(map(id, h)) for h in held))
    subset = [s for s in held[0] if id(s) in common]
    seen = set().union(*(data.get("train_generators", []) for data in records))
    unseen = sorted({s.generator for s in subset if s.label and s.generator not in seen})
    return subset, unseen


def _data_records(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """The data records that carry a split: the bundle's own, else each expert's."""
    own = provenance.get("data", {})
    if own.get("split"):
        return [own]
    experts = provenance.get("experts", {}).values()
    records = [e.get("data", {}) for e in experts if isinstance(e, dict)]
    if not records or not all(r.get("split") for r in records):
        return []  # an expert without a record may have trained on anything
    return records


def loo_rows(report: dict[str, Any], bundle: str, unseen: Sequence[str]) -> list[dict[str, Any]]:
    """One row per held-out generator: its fakes against the held-out reals."""
    rows = []
    for g in unseen:
        m = report["per_generator"].get(g, {}).get(ENSEMBLE)
        if m:
            rows.append({"generator": g, "bundle": bundle, **{k: m.get(k) for k in
                         ("auc", "ap", "acc", "best_acc", "n_fake", "n_real")}})
    return rows
