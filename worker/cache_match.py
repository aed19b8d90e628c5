"""When may a cached verdict answer for a new image? The cache entry format, and the match rule.

A cached verdict is reused only for the same picture:
- exact: the same bytes, or the same decoded pixels (another container, other metadata);
- near: a re-encode or a resize of it (JPEG q50-95, 0.5-2x), told apart from a local edit by a
  512-byte signature stored with the verdict: the grey picture cut into 16x16 cells, each cell's
  mean and texture (standard deviation). A near match must agree in EVERY cell, within a
  tolerance that grows with the cell's texture and edges (where re-encoding moves values most):
  a region replaced, refilled or inpainted shows in the cells it covers, and a mean over the
  picture would hide it, which is why the rule is a maximum.
Anything else found under the probed pHash keys (a local edit, a crafted pHash collision, an
unrelated picture) is a mismatch: the image is judged afresh and its verdict overwrites the entry.

The tolerances were chosen on photos and are measured by bench/cache_reuse.py (figures in
bench/results/cache-reuse.json): 99.4% of re-encodes and rescales are reused, 1.0% of local
edits of 2-10% of the area (0.2% of those that change their region more than a JPEG q50
re-encode does), no crafted collision. What it cannot refuse: an edit that changes less than
re-encoding does (a flat region refilled flat: about 4% of the 2% refills and blurs), changes
finer than a cell's 4x4 pixels of the 64x64 thumbnail (pixel noise: 44%), and colour-only
changes (a region's chroma swapped, its grey kept: 97%), since the signature is grey.

Entries are untrusted input (anyone with access to Redis, an older worker, a bug): every value
is parsed strictly and versioned; one that is not a valid version-2 entry is a miss, counted in
featdistill_cache_invalid_total{reason}, never an exception. score, experts and spread stay at
the top level, where workers of the first format read them.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import structlog
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.hashing import phash_probes, pixels_sha256, sha256_hex
from worker.metrics import Metrics

log = structlog.get_logger("featdistill.cache")

ENTRY_VERSION = 2
GRID = 16  # cells per side
_WORK = 64  # the grey thumbnail the cells are cut from: 4x4 of its pixels a cell
SIGNATURE_BYTES = 2 * GRID * GRID
_STD_CODE = 32.0  # stds are stored as round(32 * log2(1 + std)): steps of 1/32 octave
# Tolerances (grey levels 0-255), measured by bench/cache_reuse.py.
MEAN_TOL = 1.5  # a flat cell's mean may move this much (JPEG, resampling, 8-bit storage)
MEAN_TOL_PER_STD = 0.05  # textured cells move more: plus this fraction of the cell's std
MEAN_TOL_PER_EDGE = 0.05  # and cells on an edge (contrast to a neighbour) more again
STD_FLOOR = 2.0  # texture compared as log((std + floor) ratio): flat cells are not all noise
STD_LOG_TOL = 0.4  # a cell may lose or gain about a third of its texture, not more

Reuse = Literal["exact", "near"]


class Signature:
    """The picture's local structure: per cell of a 16x16 grid, mean grey and std (texture)."""

    def __init__(self, means: np.ndarray, stds: np.ndarray) -> None:
        self.means, self.stds = means, stds

    @classmethod
    def of(cls, img: Image.Image) -> "Signature":
        grey = img if img.mode == "L" else img.convert("L")
        thumb = np.asarray(grey.resize((_WORK, _WORK), Image.Resampling.BILINEAR), dtype=np.float64)
        k = _WORK // GRID
        cells = thumb.reshape(GRID, k, GRID, k)
        return cls(cells.mean(axis=(1, 3)), cells.std(axis=(1, 3)))

    def to_bytes(self) -> bytes:
        means = np.clip(np.round(self.means), 0, 255).astype(np.uint8)
        stds = np.clip(np.round(_STD_CODE * np.log2(1 + self.stds)), 0, 255).astype(np.uint8)
        return means.tobytes() + stds.tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Signature":
        if len(raw) != SIGNATURE_BYTES:
            raise ValueError(f"signature is {len(raw)} bytes, not {SIGNATURE_BYTES}")
        codes = np.frombuffer(raw, dtype=np.uint8).astype(np.float64).reshape(2, GRID, GRID)
        return cls(codes[0], 2 ** (codes[1] / _STD_CODE) - 1)

    def agrees_with(self, stored: "Signature") -> bool:
        """True when this picture is a re-encode or resize of the stored one: every cell agrees."""
        tol = MEAN_TOL + MEAN_TOL_PER_STD * stored.stds + MEAN_TOL_PER_EDGE * _edges(stored.means)
        if np.any(np.abs(self.means - stored.means) > tol):
            return False
        texture = np.abs(np.log((self.stds + STD_FLOOR) / (stored.stds + STD_FLOOR)))
        return bool(np.all(texture <= STD_LOG_TOL))


def _edges(means: np.ndarray) -> np.ndarray:
    """Per cell, the largest difference to a neighbour's mean."""
    p = np.pad(means, 1, mode="edge")
    c = p[1:-1, 1:-1]
    return np.max([np.abs(c - p[:-2, 1:-1]), np.abs(c - p[2:, 1:-1]),
                   np.abs(c - p[1:-1, :-2]), np.abs(c - p[1:-1, 2:])], axis=0)


@dataclass(frozen=True)
class Fingerprint:
    """Everything the cache needs to know about one decoded image."""

    sha256: str  # of the bytes
    pixels: str  # of the decoded pixels
    probes: tuple[str, ...]  # the pHash, then the variants a re-encode may have (hashing.py)
    signature: Signature

    @property
    def phash(self) -> str:
        return self.probes[0]


def fingerprint(data: bytes, img: Image.Image) -> Fingerprint:
    grey = img.convert("L")
    return Fingerprint(sha256_hex(data), pixels_sha256(img), tuple(phash_probes(grey)),
                       Signature.of(grey))


class CachedVerdict(BaseModel):
    """A cache value (JSON). Strict: a string where a number belongs is invalid, not coerced."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[2]
    score: float = Field(ge=0.0, le=1.0)
    experts: dict[str, float] = Field(min_length=1)
    spread: float = Field(ge=0.0, le=1.0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    pixels: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str  # base64 of Signature.to_bytes()

    @field_validator("experts")
    @classmethod
    def _probabilities(cls, experts: dict[str, float]) -> dict[str, float]:
        if any(not 0.0 <= p <= 1.0 for p in experts.values()):
            raise ValueError("expert probabilities must lie in [0, 1]")
        return experts

    @field_validator("signature")
    @classmethod
    def _signature_decodes(cls, value: str) -> str:
        try:
            Signature.from_bytes(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"bad signature: {exc}") from exc
        return value

    def result(self) -> dict[str, Any]:
        return {"score": self.score, "experts": self.experts, "spread": self.spread}

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def decode_entry(raw: bytes) -> CachedVerdict | str:
    """The entry, or the reason it cannot be used (a metric label)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "not_json"
    if not isinstance(data, dict):
        return "not_an_object"
    if "v" not in data:
        return "unversioned"  # the first format ({score, experts, spread}), or not ours at all
    if data["v"] != ENTRY_VERSION:
        return "other_version"  # e.g. written by a newer worker during a rolling update
    try:
        return CachedVerdict.model_validate(data)
    except ValidationError:
        return "invalid"


def match(fp: Fingerprint, entry: CachedVerdict) -> Reuse | None:
    if entry.sha256 == fp.sha256 or entry.pixels == fp.pixels:
        return "exact"
    stored = Signature.from_bytes(base64.b64decode(entry.signature))
    return "near" if fp.signature.agrees_with(stored) else None


class CacheLookup:
    """The pipeline's view of the cache: which keys to read for an image, which entries found
    there may answer for it, and what to store once it is judged."""

    def __init__(self, scope: str, metrics: Metrics) -> None:
        self.scope = scope
        self.metrics = metrics

    def key(self, fp: Fingerprint) -> str:
        return f"{self.scope}:{fp.phash}"

    def keys(self, fp: Fingerprint) -> list[str]:
        return [f"{self.scope}:{p}" for p in fp.probes]

    def decode(self, raw: dict[str, bytes]) -> dict[str, CachedVerdict]:
        """Valid entries by key; the rest are misses (their key is overwritten once judged)."""
        out = {}
        for key, value in raw.items():
            entry = decode_entry(value)
            if isinstance(entry, CachedVerdict):
                out[key] = entry
                continue
            self.metrics.cache_invalid.labels(entry).inc()
            (log.debug if entry == "unversioned" else log.warning)(
                "cache_entry_invalid", key=key, reason=entry, size=len(value))
        return out

    def find(self, fp: Fingerprint,
             candidates: list[CachedVerdict]) -> tuple[Reuse, CachedVerdict] | None:
        """The best candidate that may answer for this image: exact before near, else None (a
        mismatch is counted when there were candidates but none is this picture)."""
        kinds = [(match(fp, c), c) for c in candidates]
        for wanted in ("exact", "near"):
            for kind, entry in kinds:
                if kind == wanted:
                    return kind, entry
        if candidates:
            self.metrics.cache_mismatches.inc()
        return None

    def entry(self, fp: Fingerprint, result: dict[str, Any]) -> CachedVerdict:
        return CachedVerdict(
            v=ENTRY_VERSION, score=result["score"], experts=result["experts"],
            spread=result["spread"], sha256=fp.sha256, pixels=fp.pixels,
            signature=base64.b64encode(fp.signature.to_bytes()).decode("ascii"),
        )
