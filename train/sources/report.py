"""Counts and distributions of imported manifests: by label, generator, source, group, format and
image size, per class. Used for each source's import.json and for `--report` over the index, so
the data card's tables and the class confounds (format, size) come from one place."""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Sequence

from train.sources.files import read_rows


def _fmt(row: dict) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(
        Path(row["path"]).suffix.lower(), Path(row["path"]).suffix.lower())


def _sizes(rows: Sequence[dict]) -> dict:
    if not rows:
        return {}
    short = sorted(min(int(r["width"]), int(r["height"])) for r in rows)
    mp = sorted(int(r["width"]) * int(r["height"]) / 1e6 for r in rows)
    square = sum(int(r["width"]) == int(r["height"]) for r in rows)

    def q(v, p):
        return v[min(len(v) - 1, int(p * len(v)))]

    return {"short_side_min_p25_median_p75_max": [short[0], q(short, .25),
                                                   int(statistics.median(short)), q(short, .75),
                                                   short[-1]],
            "megapixels_median": round(statistics.median(mp), 2),
            "square_fraction": round(square / len(rows), 3)}


def summarise_rows(rows: Sequence[dict]) -> dict:
    """Counts by label, generator, split, category and format; sizes per label."""
    out: dict = {"images": len(rows)}
    for key in ("label", "split", "category", "generator"):
        out[key] = dict(sorted(Counter(r.get(key, "") for r in rows
                                       if key != "generator" or r["label"] == "fake").items()))
    out["format_by_label"] = {lab: dict(sorted(Counter(_fmt(r) for r in rows
                                                       if r["label"] == lab).items()))
                              for lab in sorted({r["label"] for r in rows})}
    out["size_by_label"] = {lab: _sizes([r for r in rows if r["label"] == lab])
                            for lab in sorted({r["label"] for r in rows})}
    return out


def report(root: Path, index: str = "train.csv") -> str:
    """A plain-text table of one index file: per group and per class."""
    path = root / index
    if not path.is_file():
        return f"{path}: not written yet"
    rows = read_rows(path)
    lines = [f"{index}: {len(rows)} images"]
    by_src = Counter((r["label"], r["path"].split("/", 1)[0]) for r in rows)
    lines.append("by label and source:")
    lines += [f"  {lab:5s} {src:34s} {n:6d}" for (lab, src), n in sorted(by_src.items())]
    gens = Counter(r["generator"] for r in rows if r["label"] == "fake")
    lines.append("AI images by generator:")
    lines += [f"  {g:34s} {n:6d}" for g, n in sorted(gens.items(), key=lambda kv: -kv[1])]
    s = summarise_rows(rows)
    lines.append(f"format by label: {s['format_by_label']}")
    for lab, sz in s["size_by_label"].items():
        lines.append(f"size {lab}: {sz}")
    return "\n".join(lines)
