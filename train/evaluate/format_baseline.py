"""A format-only baseline: how well do the files' container properties alone tell AI from real?

If a classifier that never looks at pixels (file size, width, height, aspect, container format,
JPEG quantisation tables) separates a data set's classes, a pixel detector trained on that data can
learn the same shortcut; the detector's own score on it means little until it beats this baseline
on images whose format says nothing (see `train.data.samples.PrepConfig`, which crops, resizes and
re-encodes both classes alike during training).

    python -m train.evaluate.format_baseline --train <cache>/sources/train.csv \
        --eval <cache>/sources/heldout.csv [--out report.json]

Trains two small numpy models on the training manifest and scores the evaluation manifest:
an L2-regularised logistic regression on standardised features and a depth-3 decision tree (Gini).
Also reports each feature's own AUC on the evaluation set (direction chosen on the training set).
Headers only: images are opened lazily, never decoded. With `--prep CONFIG`, each image is first
put through that run config's `data.prep` (as training does) and the re-encoded file is measured:
what is left is the shortcut training could still find (JPEG size at a given quality also reflects
image content, so a residual AUC above 0.5 there is content, not container). The evaluation manifest may be a held-out
one (split=heldout is read with training=False); the training one must be trainable.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import dataclasses
import io

import numpy as np
from PIL import Image

from train.data.records import DataError, Sample, read_manifest, subsample
from train.data.samples import PrepConfig, open_sample, prepare
from train.evaluate.metrics import roc_auc

FORMATS = ("JPEG", "PNG", "WEBP")  # one-hot; anything else is "other"
FEATURES = ("log_bytes", "log_width", "log_height", "log_aspect", "log_bits_per_pixel",
            *(f"is_{f.lower()}" for f in FORMATS), "is_other",
            "q_tables", "q_luma_mean", "q_chroma_mean", "q_luma_dc")


def quant_summary(quantization: dict[int, Sequence[int]] | None) -> tuple[float, float, float, float]:
    """(number of tables, mean of table 0, mean of table 1 or 0, table 0's DC step) from PIL's
    `im.quantization`; zeros for a file without JPEG tables."""
    if not quantization:
        return 0.0, 0.0, 0.0, 0.0
    tables = [list(quantization[k]) for k in sorted(quantization)]
    luma = tables[0]
    chroma = tables[1] if len(tables) > 1 else []
    return (float(len(tables)), float(np.mean(luma)), float(np.mean(chroma)) if chroma else 0.0,
            float(luma[0]))


def features_of(n_bytes: int, width: int, height: int, fmt: str,
                quantization: dict[int, Sequence[int]] | None) -> np.ndarray:
    """The feature vector (in FEATURES order) of one file's header facts."""
    if n_bytes <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"bad file facts: {n_bytes} bytes, {width}x{height}")
    fmt = (fmt or "").upper()
    onehot = [float(fmt == f) for f in FORMATS] + [float(fmt not in FORMATS)]
    return np.array([math.log(n_bytes), math.log(width), math.log(height), math.log(width / height),
                     math.log(8.0 * n_bytes / (width * height)), *onehot,
                     *quant_summary(quantization)], dtype=np.float64)


def file_features(path: str | Path) -> np.ndarray:
    path = Path(path)
    with Image.open(path) as im:
        return features_of(path.stat().st_size, im.width, im.height, im.format or "",
                           getattr(im, "quantization", None))


def prepared_features(img: Image.Image, cfg: PrepConfig, input_size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """The features of the file training would make of `img` under `cfg`: train.data.samples.prepare's
    crop and resize, then (with p_jpeg) its JPEG re-encoding at a uniform quality, measured on the
    encoded bytes; without re-encoding, a lossless PNG of the prepared pixels."""
    img = prepare(img.convert("RGB"), dataclasses.replace(cfg, p_jpeg=0.0), input_size, rng)
    buf = io.BytesIO()
    if cfg.enabled and rng.random() < cfg.p_jpeg:
        img.save(buf, format="JPEG",
                 quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    else:
        img.save(buf, format="PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return features_of(len(buf.getvalue()), im.width, im.height, im.format or "",
                           getattr(im, "quantization", None))


# ---- models -------------------------------------------------------------------------------

@dataclass
class Logistic:
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float

    def score(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std) @ self.w + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50,
                 balanced: bool = True) -> Logistic:
    """Newton's method on the (class-balanced, L2-penalised) log loss of standardised features."""
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    sw = _class_weights(y) if balanced else np.ones(len(y))
    beta = np.zeros(z.shape[1])
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0  # the bias is not penalised
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50, 50)))
        grad = z.T @ (sw * (p - y)) / sw.sum() + reg @ beta
        hess = (z * (sw * p * (1 - p))[:, None]).T @ z / sw.sum() + reg
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(beta)), grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Logistic(mean, std, beta[:-1], float(beta[-1]))


def _class_weights(y: np.ndarray) -> np.ndarray:
    """Each class weighs half in total (the baseline must not win by the class ratio)."""
    n1, n0 = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    return np.where(y == 1, 0.5 / n1, 0.5 / n0) * len(y)


@dataclass
class Tree:
    """A node: a leaf has `p` (weighted share of fakes) and no feature; a split sends x[f] <= t left."""
    p: float
    feature: int = -1
    threshold: float = 0.0
    left: "Tree | None" = None
    right: "Tree | None" = None

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.array([self._one(row) for row in x])

    def _one(self, row: np.ndarray) -> float:
        node = self
        while node.feature >= 0:
            node = node.left if row[node.feature] <= node.threshold else node.right
        return node.p

    def describe(self, names: Sequence[str], depth: int = 0) -> list[str]:
        pad = "  " * depth
        if self.feature < 0:
            return [f"{pad}P(fake) = {self.p:.3f}"]
        return ([f"{pad}{names[self.feature]} <= {self.threshold:.4g}:"]
                + self.left.describe(names, depth + 1)
                + [f"{pad}{names[self.feature]} > {self.threshold:.4g}:"]
                + self.right.describe(names, depth + 1))


def fit_tree(x: np.ndarray, y: np.ndarray, depth: int = 3, min_leaf: int = 10,
             sw: np.ndarray | None = None) -> Tree:
    """Greedy Gini splits (class-balanced weights), thresholds halfway between distinct values."""
    sw = _class_weights(y) if sw is None else sw
    p = float((sw * y).sum() / sw.sum()) if sw.sum() > 0 else 0.5
    if depth == 0 or len(y) < 2 * min_leaf or p in (0.0, 1.0):
        return Tree(p)
    best = None  # (impurity, feature, threshold)
    for f in range(x.shape[1]):
        order = np.argsort(x[:, f], kind="stable")
        xs, ys, ws = x[order, f], y[order], sw[order]
        cw, cf = np.cumsum(ws), np.cumsum(ws * ys)
        tw, tf = cw[-1], cf[-1]
        cut = np.nonzero(xs[1:] > xs[:-1])[0]  # split after index i
        cut = cut[(cut + 1 >= min_leaf) & (len(ys) - cut - 1 >= min_leaf)]
        if not len(cut):
            continue
        lw, lf = cw[cut], cf[cut]
        rw, rf = tw - lw, tf - lf
        gini = (lw * _gini(lf / lw) + rw * _gini(rf / rw)) / tw
        i = int(np.argmin(gini))
        if best is None or gini[i] < best[0] - 1e-12:
            best = (float(gini[i]), f, float((xs[cut[i]] + xs[cut[i] + 1]) / 2))
    if best is None or best[0] >= _gini(p) - 1e-12:
        return Tree(p)
    _, f, t = best
    left = x[:, f] <= t
    return Tree(p, f, t, fit_tree(x[left], y[left], depth - 1, min_leaf, sw[left]),
                fit_tree(x[~left], y[~left], depth - 1, min_leaf, sw[~left]))


def _gini(p: np.ndarray | float) -> np.ndarray | float:
    return 2.0 * p * (1.0 - p)


# ---- running ------------------------------------------------------------------------------

def load(samples: Sequence[Sample], prep: PrepConfig | None = None, input_size: int = 224,
         seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features and labels of the samples whose headers can be read; the unreadable are listed.
    With `prep`, the features of each image after training's preparation (decodes every image)."""
    rows, labels, bad = [], [], []
    for i, s in enumerate(samples):
        try:
            if prep is None:
                rows.append(file_features(s.path))
            else:
                rows.append(prepared_features(open_sample(s), prep, input_size,
                                              np.random.default_rng([seed, i])))
            labels.append(s.label)
        except (OSError, ValueError) as exc:
            bad.append(f"{s.path}: {exc}")
    if not rows:
        raise DataError("no readable images")
    return np.vstack(rows), np.array(labels, dtype=np.float64), bad


def feature_aucs(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                 y_eval: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Each feature alone as a score, its sign chosen on the training set."""
    out = {}
    for i, name in enumerate(FEATURES):
        a = roc_auc(y_train, x_train[:, i])
        sign = -1.0 if a is not None and a < 0.5 else 1.0
        out[name] = {"train_auc": _r(None if a is None else max(a, 1 - a)),
                     "eval_auc": _r(roc_auc(y_eval, sign * x_eval[:, i]))}
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def run(train_manifest: Path, eval_manifest: Path, limit: int = 0, seed: int = 0,
        prep: PrepConfig | None = None, input_size: int = 224) -> dict[str, Any]:
    train = subsample(read_manifest(train_manifest, training=True), limit, seed)
    evals = subsample(read_manifest(eval_manifest, training=False), limit, seed)
    xt, yt, bad_t = load(train, prep, input_size, seed)
    xe, ye, bad_e = load(evals, prep, input_size, seed + 1)
    logit = fit_logistic(xt, yt)
    tree = fit_tree(xt, yt)
    counts = lambda y: {"real": int((y == 0).sum()), "fake": int(y.sum())}  # noqa: E731
    return {
        "train": {"manifest": str(train_manifest), **counts(yt), "unreadable": bad_t},
        "eval": {"manifest": str(eval_manifest), **counts(ye), "unreadable": bad_e},
        "features": list(FEATURES),
        "prep": None if prep is None else {**dataclasses.asdict(prep), "input_size": input_size},
        "logistic": {"train_auc": _r(roc_auc(yt, logit.score(xt))),
                     "eval_auc": _r(roc_auc(ye, logit.score(xe))),
                     "weights": {n: round(float(w), 4) for n, w in zip(FEATURES, logit.w)}},
        "tree": {"train_auc": _r(roc_auc(yt, tree.score(xt))),
                 "eval_auc": _r(roc_auc(ye, tree.score(xe))),
                 "rules": tree.describe(FEATURES)},
        "per_feature": feature_aucs(xt, yt, xe, ye),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate.format_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, required=True, help="training manifest (.csv/.jsonl)")
    p.add_argument("--eval", type=Path, required=True, help="evaluation manifest (.csv/.jsonl)")
    p.add_argument("--out", type=Path, help="write the report here as JSON")
    p.add_argument("--limit", type=int, default=0, help="at most N images of each manifest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prep", type=Path, metavar="CONFIG",
                   help="measure the files training makes instead: apply this run config's "
                        "data.prep (crop, resize, JPEG re-encoding) to every image first (decodes)")
    p.add_argument("--input-size", type=int, default=224, help="the expert's input size, for --prep")
    args = p.parse_args(argv)
    try:
        prep = None
        if args.prep:
            from train.fit.config import build, read_raw
            prep = build(PrepConfig, read_raw(args.prep).get("data", {}).get("prep", {}), "data.prep")
            if not prep.enabled:
                raise DataError(f"{args.prep}: data.prep is not enabled")
        report = run(args.train, args.eval, args.limit, args.seed, prep, args.input_size)
    except (DataError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"format_baseline: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    t, e = report["train"], report["eval"]
    print(f"train: {t['fake']} fake / {t['real']} real; eval: {e['fake']} fake / {e['real']} real"
          f" (unreadable: {len(t['unreadable'])} / {len(e['unreadable'])})")
    for model in ("logistic", "tree"):
        print(f"{model:9s} AUC train {report[model]['train_auc']}  eval {report[model]['eval_auc']}")
    print("tree:\n  " + "\n  ".join(report["tree"]["rules"]))
    top = sorted(report["per_feature"].items(), key=lambda kv: -(kv[1]["eval_auc"] or 0))[:5]
    print("best single features (eval AUC): " + ", ".join(f"{k} {v['eval_auc']}" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
