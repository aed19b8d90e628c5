"""Binary detection metrics in numpy: ROC AUC, average precision, accuracy, thresholds.

Convention: label 1 = fake (positive), a higher score = more likely fake, and an image is called
fake when score >= threshold. Ties are handled exactly: AUC counts a tied (fake, real) pair as one
half (Mann-Whitney with average ranks); AP and the ROC curve step once per distinct score, as
scikit-learn does. Thresholds we choose lie halfway between two distinct scores, so the same
partition is kept by scores that move a little.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y, s


def roc_auc(labels, scores) -> float | None:
    """P(score of a random fake > score of a random real), ties counting 1/2; None if a class
    is missing."""
    y, s = _arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first copy
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]  # tied values share their average rank
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _desc_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and the cumulative fakes / reals scoring at least each one."""
    values, inverse = np.unique(-s, return_inverse=True)
    tp = np.cumsum(np.bincount(inverse, weights=y, minlength=len(values)))
    fp = np.cumsum(np.bincount(inverse, weights=1 - y, minlength=len(values)))
    return -values, tp, fp


def average_precision(labels, scores) -> float | None:
    """sum_k (R_k - R_{k-1}) * P_k over distinct thresholds; None without fakes."""
    y, s = _arrays(labels, scores)
    if y.sum() == 0:
        return None
    _, tp, fp = _desc_counts(y, s)
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct score."""
    y, s = _arrays(labels, scores)
    _, tp, fp = _desc_counts(y, s)
    tpr = np.concatenate([[0.0], tp / max(y.sum(), 1)])
    fpr = np.concatenate([[0.0], fp / max((1 - y).sum(), 1)])
    return fpr, tpr


def accuracy(labels, scores, threshold: float) -> float:
    y, s = _arrays(labels, scores)
    return float(np.mean((s >= threshold).astype(np.int64) == y)) if y.size else float("nan")


def _cut(values: np.ndarray, k: int) -> float:
    """A threshold calling fake exactly the scores >= values[k] (values descending); k = -1: none."""
    if k < 0:
        return float((values[0] + 1.0) / 2.0)
    if k == len(values) - 1:
        return float(values[k] / 2.0)
    return float((values[k] + values[k + 1]) / 2.0)


def best_threshold(labels, scores) -> tuple[float, float]:
    """(threshold, accuracy) of the most accurate threshold."""
    y, s = _arrays(labels, scores)
    values, tp, fp = _desc_counts(y, s)
    n_neg = (1 - y).sum()
    acc = np.concatenate([[n_neg], tp + (n_neg - fp)]) / len(y)  # index 0: nothing called fake
    k = int(np.argmax(acc))
    return _cut(values, k - 1), float(acc[k])


def threshold_at_fpr(labels, scores, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these reals is <= target_fpr."""
    y, s = _arrays(labels, scores)
    n_neg = (1 - y).sum()
    if n_neg == 0:
        raise ValueError("choosing a threshold for a false-positive rate needs real images")
    values, _, fp = _desc_counts(y, s)
    ok = np.nonzero(fp / n_neg <= target_fpr + 1e-12)[0]
    return _cut(values, int(ok[-1]) if ok.size else -1)


def threshold_interval(labels, scores, target_fpr: float, level: float = 0.9,
                       resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """How far `threshold_at_fpr` moves when the reals are drawn again with replacement (a
    bootstrap; the fakes stay): the central `level` interval of the thresholds it then picks.
    A rate on few reals rests on the one or two highest of them, and this interval says so: on
    59 photos at 3 % it spans 0.73 to 1.00 for the shipped 0.976."""
    y, s = _arrays(labels, scores)
    reals, fakes = s[y == 0], s[y == 1]
    if reals.size == 0:
        raise ValueError("a threshold interval needs real images")
    rng = np.random.default_rng(seed)
    drawn_labels = np.r_[np.zeros(reals.size, np.int64), np.ones(fakes.size, np.int64)]
    picks = [threshold_at_fpr(drawn_labels, np.r_[rng.choice(reals, reals.size), fakes], target_fpr)
             for _ in range(resamples)]
    lo, hi = np.quantile(picks, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def binary_metrics(labels, scores, threshold: float) -> dict[str, Any]:
    y, s = _arrays(labels, scores)
    out: dict[str, Any] = {"n_real": int((1 - y).sum()), "n_fake": int(y.sum()),
                           "auc": roc_auc(y, s), "ap": average_precision(y, s)}
    out["threshold"] = float(threshold)
    out["acc"] = accuracy(y, s, threshold) if y.size else None
    pred = s >= threshold
    out["tpr"] = float(pred[y == 1].mean()) if out["n_fake"] else None
    out["fpr"] = float(pred[y == 0].mean()) if out["n_real"] else None
    if y.size:
        out["best_threshold"], out["best_acc"] = best_threshold(y, s)
    return out
