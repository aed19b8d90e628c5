"""What a package source is: `Importer` (one pinned package, its licence, label and rules) and
`Rule` (a path glob inside the package with a category), and which packages are reserved for
independent evaluation (never imported). The pipeline that runs them is train.sources.packages;
the sources themselves are train.sources.package_sources. This module imports nothing of the
project, so every other module of train.sources can import it at the top.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

CATEGORIES = frozenset({"drawing", "clipart", "icon", "texture", "render", "screenshot",
                        "pixel-art", "painting", "photo", "wallpaper"})
PIPELINE_VERSION = 1  # bump when normalising or filtering changes: invalidates every stamp

# Desktop wallpaper / background packages: reserved for the independent evaluation that measures
# this project's bundles. Never imported here, not even as an evaluation split: an importer that
# names one cannot be constructed.
RESERVED_PATTERNS = (
    r".*-backgrounds?",  # gnome-, mate-, sway-backgrounds, ...
    r".*-wallpapers?(-.*)?",  # plasma-workspace-, ukui-, lomiri-wallpapers(-16.04), ...
    r"desktop-base",
    r"debian-edu-artwork(-.*)?",
    r"xfdesktop4-data",
    r"lxqt-themes",
)


def is_reserved(package: str) -> bool:
    """True for a package reserved for independent evaluation (desktop wallpapers, backgrounds)."""
    return any(re.fullmatch(p, package) for p in RESERVED_PATTERNS)


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
    eval_only: bool = False  # a set of the user's own kept for evaluation: split = eval_only
    held_out: bool = False  # the project's own held-out evaluation package: split = heldout
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
        if self.manager == "apt" and is_reserved(self.package):
            raise ValueError(f"{self.name}: {self.package} is reserved for independent "
                             "evaluation and may never be imported")
        if self.eval_only and self.held_out:
            raise ValueError(f"{self.name}: eval_only and held_out exclude each other")
        for rule in self.rules:
            category = rule.category
            if category not in CATEGORIES and not category.startswith("ai-"):
                raise ValueError(f"{self.name}: unknown category {category!r}")
            if (self.kind == "fake") != category.startswith("ai-"):
                raise ValueError(f"{self.name}: category {category!r} does not fit kind {self.kind}")

    @property
    def split(self) -> str:
        if self.eval_only:
            return "eval_only"
        return "heldout" if self.held_out else "train"

    @property
    def label(self) -> str:
        return self.kind

    def config_hash(self) -> str:
        """Changes when anything that decides the output changes (not the notes)."""
        cfg = {k: v for k, v in asdict(self).items() if k not in ("generate", "notes", "default")}
        if not cfg["held_out"]:  # added later: the stamps of the training sources stay valid
            del cfg["held_out"]
        cfg["pipeline"] = PIPELINE_VERSION
        cfg["generate"] = getattr(self.generate, "version", None) if self.generate else None
        return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
