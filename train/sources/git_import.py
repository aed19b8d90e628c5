"""Training sources from public git repositories: modern AI images and everyday real photos.

Why: the package sources (train.sources.packages) hold no modern AI images and few photos; public GitHub
repositories hold many (prompt galleries of GPT-image / Nano Banana / FLUX, ComfyUI examples,
style-preview sets, EXIF sample photos). The user clones each repository and checks out nothing:
an importer reads the **pinned commit** from the local clone or bare mirror (train.sources.gitread),
so the same commit always gives the same corpus. Sources: train/sources/git_sources.py; what each
holds, its licence and counts: train/sources/DATACARD.md ("Sources from git repositories").

Per source (`GitSource`): the repository ("owner/name"), the pinned commit, the licence, and
`GitRule`s: a path glob inside the repository with the label, the generator (fixed, or resolved
per file from the repository's own metadata), a category and an optional `trim` that crops burned-in
captions or logos. Running one:

    select    blobs of the commit matching a rule (the first matching rule wins); PNG/JPEG/WebP;
              blobs of 4 MiB or more are skipped (partial mirrors lack them, so a full clone and a
              mirror give the same corpus) and Git LFS pointers are counted and skipped
    decode    the EXIF orientation is applied; animated images are dropped (video previews)
    trim      per-rule crop (captions, logos); then the package pipeline's filters (size, aspect,
              transparency, blank), downscaling above the loader's pixel limit
    strip     every training copy holds pixels only (train.sources.strip): JPEG metadata removed
              losslessly, WebP chunks removed, PNG rewritten from pixels; others become PNG
    dedupe    by the SHA-256 of the written file's decoded pixels, first path in sorted order wins
    write     <root>/<name>/{images/, manifest.csv, import.json}; `source` is owner/name@commit and
              `orig` the path inside the repository (never a path on this machine)

`split` is `train`, or `heldout` for the sources kept back for the project's own evaluation
(`held_out=True`: whole generators and whole real-photo sources the model never trains on). `group`
is `gen:<generator>` for AI images and `real:<source>` for reals, for leave-one-group-out folds.

CLI:  python -m train.sources.git_cli [--list] [--only NAME ...] [--git-root DIR ...] [--force]
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from PIL import Image

from train.sources.files import (
    HARD_MAX_PIXELS, RASTER_SUFFIXES, _reject_reason, _SAFE, glob_regex, has_alpha, pixel_sha256,
    to_rgb, write_manifest,
)
from train.sources.gitread import (
    Entry, check_commit, is_lfs_pointer, is_reserved_repo, iter_blobs, list_files, read_bytes,
    read_text,
)
from train.sources.report import summarise_rows
from train.sources.strip import (
    StripError, encode_jpeg_like, encode_png, orientation, strip_jpeg, strip_webp, upright,
)

GIT_PIPELINE_VERSION = 1  # bump when reading, stripping or filtering changes
MAX_BLOB_BYTES = 4 * 1024 * 1024 - 1  # the fetch mirror lacks blobs of 4 MiB and more
LOADER_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Ctx:
    """What a generator resolver may read: other files of the same commit."""
    git_dir: Path
    commit: str

    def text(self, path: str) -> str:
        return read_text(self.git_dir, self.commit, path)

    def blob(self, path: str) -> bytes:
        return read_bytes(self.git_dir, self.commit, path)


Resolver = Callable[[str, Ctx], "str | None"]  # (path in repo, ctx) -> generator, None: drop


@dataclass(frozen=True)
class GitRule:
    glob: str
    label: Literal["real", "fake"]
    category: str  # "photo" for reals; "ai-..." for AI images
    generator: str = ""  # fake: the generator, unless generator_from resolves it per file
    generator_from: Resolver | None = field(default=None, compare=False)
    exclude: tuple[str, ...] = ()
    trim: tuple[float, float, float, float] = (0, 0, 0, 0)  # top, right, bottom, left: <1 a
    # fraction of that side, >=1 pixels; crops burned-in captions and visible generator logos
    limit: int = 0  # keep at most N (lowest pixel hashes)
    licence: str = ""  # overrides the source's licence for these files

    def __post_init__(self) -> None:
        if self.label not in ("real", "fake"):
            raise ValueError(f"{self.glob}: label must be real or fake")
        if (self.label == "fake") != self.category.startswith("ai-"):
            raise ValueError(f"{self.glob}: category {self.category!r} does not fit {self.label}")
        if self.label == "real" and (self.generator or self.generator_from):
            raise ValueError(f"{self.glob}: a real rule has no generator")
        if self.label == "fake" and not (self.generator or self.generator_from):
            raise ValueError(f"{self.glob}: an AI rule needs a generator (or generator_from)")


@dataclass(frozen=True)
class GitSource:
    name: str
    repo: str  # owner/name on GitHub
    commit: str  # pinned, 40 hex
    licence: str
    rules: tuple[GitRule, ...]
    held_out: bool = False  # the project's own held-out evaluation source: split=heldout
    min_side: int = 96
    max_aspect: float = 6.0
    min_std: float = 4.0
    min_coverage: float = 0.05
    background: tuple[int, int, int] = (255, 255, 255)
    default: bool = True
    notes: str = ""

    def __post_init__(self) -> None:
        if is_reserved_repo(self.repo):
            raise ValueError(f"{self.name}: {self.repo} is reserved for independent evaluation "
                             "and may never be imported")
        if "/" not in self.repo:
            raise ValueError(f"{self.name}: repo must be owner/name")

    @property
    def split(self) -> str:
        return "heldout" if self.held_out else "train"

    @property
    def source_id(self) -> str:
        return f"{self.repo}@{self.commit}"

    def config_hash(self) -> str:
        cfg = {k: v for k, v in asdict(self).items() if k not in ("notes", "default", "rules")}
        cfg["rules"] = [{k: v for k, v in asdict(r).items() if k != "generator_from"}
                        | {"resolver": _resolver_id(r.generator_from)}
                        for r in self.rules]
        cfg["pipeline"] = GIT_PIPELINE_VERSION
        blob = json.dumps(cfg, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _resolver_id(fn: Resolver | None) -> str | None:
    """Name and `version` attribute of a resolver: bump the version when its table changes, so
    the stamp of every source using it goes stale."""
    return None if fn is None else f"{fn.__qualname__}:{getattr(fn, 'version', 0)}"


@dataclass
class GitItem:
    rel: str  # output path under images/
    orig: str  # path in the repository (#trim=... when cropped)
    rule: int
    generator: str
    sha256: str  # of the written file's decoded pixels
    size: tuple[int, int]
    fmt: str  # JPEG / PNG / WEBP as written


def trim_box(size: tuple[int, int], trim: tuple[float, float, float, float]):
    w, h = size
    top, right, bottom, left = (int(round(t * (h if i % 2 == 0 else w))) if t < 1 else int(t)
                                for i, t in enumerate(trim))
    return (left, top, w - right, h - bottom)


def _decode_rgb(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB").tobytes()


def encode_clean(img: Image.Image, rgb: Image.Image, data: bytes, changed: bool,
                 stats: Counter) -> tuple[bytes, str, bool]:
    """(file bytes holding pixels only, format, whether they decode to exactly `rgb`). Lossless
    metadata removal where the pixels are unchanged; otherwise a re-encode (JPEG with the
    original's tables, lossless PNG for the rest)."""
    fmt = img.format or "PNG"
    if not changed and fmt in ("JPEG", "WEBP") and img.mode in ("RGB", "L") and not has_alpha(img):
        try:
            out = strip_jpeg(data) if fmt == "JPEG" else strip_webp(data)
            if _decode_rgb(out) == rgb.tobytes():
                stats[f"{fmt.lower()}_stripped_lossless"] += 1
                return out, fmt, True
        except (StripError, OSError, ValueError):
            pass
        stats["strip_fallback"] += 1
    if fmt == "JPEG":
        stats["jpeg_reencoded"] += 1
        return encode_jpeg_like(rgb, img), "JPEG", False
    stats["png_rewritten"] += 1
    return encode_png(rgb), "PNG", True


def process_blob(entry: Entry, data: bytes, rule: GitRule, src: GitSource,
                 stats: Counter) -> tuple[bytes, GitItem] | None:
    """The cleaned file and its record, or None (the reason counted in stats)."""
    if is_lfs_pointer(data):
        stats["lfs_pointer"] += 1
        return None
    try:
        img = Image.open(io.BytesIO(data))
        if img.size[0] * img.size[1] > HARD_MAX_PIXELS:
            stats["too_large"] += 1
            return None
        if getattr(img, "n_frames", 1) > 1:
            stats["animated"] += 1
            return None
        img.load()
        turned = upright(img)
        rotated = orientation(img) != 1
        box = trim_box(turned.size, rule.trim) if any(rule.trim) else None
        work = turned.crop(box) if box else turned
        rgb, coverage = to_rgb(work, src.background)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        stats["unreadable"] += 1
        return None
    resized = rgb.size[0] * rgb.size[1] > LOADER_MAX_PIXELS
    if resized:
        scale = (LOADER_MAX_PIXELS / (rgb.size[0] * rgb.size[1])) ** 0.5
        rgb = rgb.resize((int(rgb.size[0] * scale), int(rgb.size[1] * scale)),
                         Image.Resampling.LANCZOS)
        stats["downscaled"] += 1
    reason = _reject_reason(rgb, coverage, src, src.min_side)
    if reason:
        stats[reason] += 1
        return None
    changed = bool(rotated or box or resized or has_alpha(img))
    out, fmt, exact = encode_clean(img, rgb, data, changed, stats)
    if rotated:
        stats["rotated"] += 1
    decoded = rgb if exact else Image.open(io.BytesIO(out)).convert("RGB")
    suffix = {"JPEG": ".jpg", "WEBP": ".webp"}.get(fmt, ".png")
    rel = _SAFE.sub("_", str(Path(entry.path).with_suffix(suffix)))
    orig = entry.path + (f"#trim={box[0]},{box[1]},{box[2]},{box[3]}" if box else "")
    return out, GitItem(rel, orig, src.rules.index(rule), "", pixel_sha256(decoded),
                        decoded.size, fmt)


def select(entries: list[Entry], rules: tuple[GitRule, ...]) -> list[tuple[Entry, GitRule]]:
    compiled = [(r, glob_regex(r.glob), [glob_regex(e) for e in r.exclude]) for r in rules]
    chosen = []
    for entry in entries:
        if Path(entry.path).suffix.lower() not in RASTER_SUFFIXES:
            continue
        for rule, rx, excludes in compiled:
            if rx.fullmatch(entry.path) and not any(e.fullmatch(entry.path) for e in excludes):
                chosen.append((entry, rule))
                break
    return chosen


def collect(git_dir: Path, src: GitSource, out_images: Path, stats: Counter) -> list[GitItem]:
    """Select, read, clean, filter and dedupe the source's images, writing each kept one under
    out_images as it goes (bounded memory)."""
    ctx = Ctx(git_dir, src.commit)
    entries, skipped = list_files(git_dir, src.commit)
    stats["not_a_file"] += skipped
    chosen = select(entries, src.rules)
    stats["candidates"] += len(chosen)
    todo: list[tuple[Entry, GitRule, str]] = []
    for entry, rule in chosen:
        generator = rule.generator
        if rule.label == "fake" and rule.generator_from is not None:
            generator = rule.generator_from(entry.path, ctx) or ""
            if not generator:
                stats["generator_unknown"] += 1
                continue
        if entry.size < 0:
            stats["missing_blob"] += 1
            continue
        if entry.size > MAX_BLOB_BYTES:
            stats["blob_4mib_or_more"] += 1
            continue
        todo.append((entry, rule, generator))
    seen: set[str] = set()
    per_rule: dict[int, list[GitItem]] = {}
    by_entry = {e.path: (r, g) for e, r, g in todo}
    for entry, data in iter_blobs(git_dir, [e for e, _, _ in todo]):
        rule, generator = by_entry[entry.path]
        if data is None:
            stats["missing_blob"] += 1
            continue
        made = process_blob(entry, data, rule, src, stats)
        if made is None:
            continue
        out, item = made
        if item.sha256 in seen:
            stats["duplicate"] += 1
            continue
        seen.add(item.sha256)
        item.generator = generator
        dest = out_images / item.rel
        if dest.exists():  # two repository paths that sanitise to one name
            item.rel = str(Path(item.rel).with_name(f"{Path(item.rel).stem}-{item.sha256[:8]}"
                                                    f"{Path(item.rel).suffix}"))
            dest = out_images / item.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(out)
        per_rule.setdefault(item.rule, []).append(item)
    kept: list[GitItem] = []
    for index, items in sorted(per_rule.items()):
        limit = src.rules[index].limit
        if limit and len(items) > limit:
            ranked = sorted(items, key=lambda it: it.sha256)
            for it in ranked[limit:]:
                (out_images / it.rel).unlink()
            stats["over_limit"] += len(items) - limit
            items = ranked[:limit]
        kept.extend(items)
    return sorted(kept, key=lambda it: it.rel)


def rows_of(src: GitSource, items: list[GitItem]) -> list[dict]:
    rows = []
    for it in items:
        rule = src.rules[it.rule]
        rows.append({
            "path": f"images/{it.rel}", "label": rule.label, "generator": it.generator,
            "source": src.source_id, "category": rule.category,
            "licence": rule.licence or src.licence, "split": src.split, "sha256": it.sha256,
            "width": it.size[0], "height": it.size[1], "orig": it.orig,
            "group": f"gen:{it.generator}" if rule.label == "fake" else f"real:{src.name}",
        })
    return rows


def import_git(src: GitSource, git_dir: Path, root: Path, stats: Counter | None = None) -> list[dict]:
    """Import one source from a local clone into root/<name> (replaced whole)."""
    stats = Counter() if stats is None else stats
    check_commit(git_dir, src.repo, src.commit)
    out_dir = root / src.name
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        items = collect(git_dir, src, tmp / "images", stats)
        rows = rows_of(src, items)
        write_manifest(tmp / "manifest.csv", rows)
        stamp = {"name": src.name, "repo": src.repo, "commit": src.commit, "licence": src.licence,
                 "split": src.split, "config": src.config_hash(), "summary": summarise_rows(rows),
                 "dropped": dict(sorted(stats.items()))}
        (tmp / "import.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return rows


def stamp_matches(out_dir: Path, src: GitSource) -> bool:
    try:
        data = json.loads((out_dir / "import.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return ((out_dir / "manifest.csv").is_file() and data.get("config") == src.config_hash()
            and data.get("commit") == src.commit)
