"""When may a cached verdict answer for a new image? The cache entry format, and the match rule.

A cached verdict is reused only for the same picture:
- exact: the same bytes, or the same decoded pixels (another container, other metadata);
- near: a re-encode or a resize of it (JPEG q50-95, 0.5-2x), told apart from a local edit by a
  768-byte signature stored with the verdict: the picture cut into 16x16 cells, each cell's mean
  grey (12 bits: 1/16 of a level), texture (grey standard deviation, a nibble) and mean colour
  (Cb and Cr, a nibble each: steps of 4, clipped at 128 +- 28). A near match must agree in EVERY
  cell, within a tolerance that grows with the cell's texture and edges (where re-encoding moves
  values most): a region replaced, refilled, inpainted or recoloured shows in the cells it
  covers, and a mean over the picture would hide it, which is why the rule is a maximum. Colour
  is compared in its own cells, with a tolerance that 4:2:0 chroma subsampling and resampling
  stay within. And no cell's grey may move far more than the picture's own re-encode level (the
  spread rule, SPREAD_* below): a q95 copy moves a flat cell by hundredths of a level, so a flat
  region refilled or blurred by half a level shows against it, though it is within the cell's
  absolute tolerance (1.5 levels, which a q50 copy or a 0.5x rescale needs).
Anything else found under the probed pHash keys (a local edit, a crafted pHash collision, an
unrelated picture) is a mismatch: the image is judged afresh and its verdict overwrites the entry.

The tolerances were chosen on photos and are measured by bench/cache_reuse.py (figures in
bench/results/cache-reuse.json, 300 photos; the spread rule was tuned on photos 0-149 only, with
bench/cache_signature_lab.py): 98.3% of re-encodes and rescales are reused (94.3% of the 0.5x
rescales, 98.3% of JPEG q50), 0.53% of local edits of 2-10% of the area (19 of 3600: 0.28% on
photos 0-149, 0.78% on the held-out photos 150-299; 0.03% of the edits that change their region
more than a JPEG q50 re-encode does), 2.9% of colour-only edits (a region's chroma swapped or
replaced, its grey kept: 0.7% of those that change its chroma more than q50 does; 8% of the 2%
chroma swaps), no crafted collision. Version 3 (whole grey levels, no spread rule): 99.0%
re-encodes, 1.06% edits (0.56% and 1.56% on the two halves). What it still cannot refuse: a
few 2% refills and blurs of flat regions (2.0% and 3.3% of them) that move their cells no more
than a re-encode moves the rest, a recolouring of a nearly grey region, and changes finer than
a cell's 4x4 pixels of the 64x64 thumbnail (pixel noise: 51%).

Entries are untrusted input (anyone with access to Redis, an older worker, a bug): every value
is parsed strictly and versioned; one that is not a valid version-4 entry is a miss, counted in
featdistill_cache_invalid_total{reason}, never an exception (version-2 and -3 entries left by an
older worker: reason other_version, overwritten once judged). score, experts and spread stay at
the top level, where workers of the first format read them. A value is about 1.35 KB.
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

ENTRY_VERSION = 4  # 4: grey means in 1/16 levels (version-2 and -3 entries are counted misses)
GRID = 16  # cells per side
_WORK = 64  # the thumbnail the cells are cut from: 4x4 of its pixels a cell
# Per cell: mean grey in 12 bits (a byte, then a nibble of sixteenths), a nibble each of texture,
# Cb and Cr. The sixteenths are what the spread rule below needs: a flat cell moves a tenth of a
# level under a high-quality re-encode, and whole levels would hide that.
SIGNATURE_BYTES = GRID * GRID * 3
_MEAN_STEPS = 16  # grey means stored in 1/16 levels
_STD_CODE = 15 / np.log2(81.0)  # std stored as a nibble, round(k * log2(1 + std)): 0..80 grey
_CHROMA_STEP = 4.0  # chroma (Cb, Cr minus 128) stored in steps of 4, clipped to +-28: a nibble
_CHROMA_CLIP = 7 * _CHROMA_STEP
# Tolerances (levels 0-255), measured by bench/cache_reuse.py.
MEAN_TOL = 1.5  # a flat cell's mean may move this much (JPEG, resampling, 8-bit storage)
MEAN_TOL_PER_STD = 0.05  # textured cells move more: plus this fraction of the cell's std
MEAN_TOL_PER_EDGE = 0.05  # and cells on an edge (contrast to a neighbour) more again
STD_FLOOR = 2.0  # texture compared as log((std + floor) ratio): flat cells are not all noise
STD_LOG_TOL = 0.5  # a cell may lose or gain about 40% of its texture, not more
CHROMA_TOL = 4.0  # a cell's mean Cb or Cr may move this much (4:2:0 subsampling, JPEG, storage)
CHROMA_TOL_PER_EDGE = 0.1  # plus this fraction of its largest chroma step to a neighbour
# The spread rule: a re-encode moves every cell's mean a little, more where the cell is textured
# or on an edge; a local edit moves a few cells far more than the rest of the picture moved. A
# cell's move, divided by 1 + SPREAD_PER_STD * std + SPREAD_PER_EDGE * edge, may not exceed the
# larger of SPREAD_FLOOR and SPREAD_TOL times the picture's SPREAD_PERCENTILE-th percentile of
# that quotient (its own re-encode level; medians on the tuning photos: 0.04 for a q95 copy,
# 0.11 for q50, 0.12 for a 0.5x rescale). The five values: a grid search on photos 0-149 only,
# the fewest edits reused among the settings that keep >= 98.5% of their re-encodes.
SPREAD_PER_STD = 0.05
SPREAD_PER_EDGE = 0.02
SPREAD_PERCENTILE = 75
SPREAD_TOL = 10.0
SPREAD_FLOOR = 0.5  # levels: whatever the picture's level, a cell may move this much

Reuse = Literal["exact", "near"]

# ITU-R 601 (what PIL's "L" and "YCbCr" use), applied to the RGB thumbnail's float means.
_LUMA = np.array([0.299, 0.587, 0.114])
_CB = np.array([-0.168736, -0.331264, 0.5])
_CR = np.array([0.5, -0.418688, -0.081312])


class Signature:
    """The picture's local structure: per cell of a 16x16 grid, mean grey, its std (texture),
    and mean chroma (Cb, Cr minus 128), so that a region recoloured with its grey kept shows."""

    def __init__(self, means: np.ndarray, stds: np.ndarray, chroma: np.ndarray) -> None:
        self.means, self.stds, self.chroma = means, stds, chroma  # chroma: (2, GRID, GRID)

    @classmethod
    def of(cls, img: Image.Image) -> "Signature":
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        thumb = np.asarray(img.resize((_WORK, _WORK), Image.Resampling.BILINEAR), dtype=np.float64)
        if thumb.ndim == 2:  # a grey picture has no chroma
            grey, chroma = thumb, np.zeros((2, _WORK, _WORK))
        else:
            grey, chroma = thumb @ _LUMA, np.stack([thumb @ _CB, thumb @ _CR])
        k = _WORK // GRID
        cells = grey.reshape(GRID, k, GRID, k)
        return cls(cells.mean(axis=(1, 3)), cells.std(axis=(1, 3)),
                   chroma.reshape(2, GRID, k, GRID, k).mean(axis=(2, 4)))

    def to_bytes(self) -> bytes:
        means = np.clip(np.round(self.means * _MEAN_STEPS), 0, 255 * _MEAN_STEPS).astype(np.uint16)
        stds = np.clip(np.round(_STD_CODE * np.log2(1 + self.stds)), 0, 15)
        chroma = np.round(np.clip(self.chroma, -_CHROMA_CLIP, _CHROMA_CLIP) / _CHROMA_STEP) + 7
        nibbles = np.concatenate([stds.ravel(), chroma.ravel(), (means & 15).ravel()])
        nibbles = nibbles.astype(np.uint8)
        return ((means >> 4).astype(np.uint8).tobytes()
                + ((nibbles[0::2] << 4) | nibbles[1::2]).tobytes())

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Signature":
        if len(raw) != SIGNATURE_BYTES:
            raise ValueError(f"signature is {len(raw)} bytes, not {SIGNATURE_BYTES}")
        codes = np.frombuffer(raw, dtype=np.uint8)
        cells = GRID * GRID
        packed = codes[cells:]
        nibbles = np.stack([packed >> 4, packed & 15], axis=1).ravel().astype(np.float64)
        chroma = nibbles[cells:3 * cells].reshape(2, GRID, GRID)
        means = codes[:cells].astype(np.float64) * _MEAN_STEPS + nibbles[3 * cells:]
        if np.any(chroma > 14) or np.any(means > 255 * _MEAN_STEPS):
            raise ValueError("chroma or grey code out of range")
        return cls(means.reshape(GRID, GRID) / _MEAN_STEPS,
                   2 ** (nibbles[:cells].reshape(GRID, GRID) / _STD_CODE) - 1,
                   (chroma - 7) * _CHROMA_STEP)

    def agrees_with(self, stored: "Signature") -> bool:
        """True when this picture is a re-encode or resize of the stored one: every cell agrees,
        and no cell moved far more than the picture as a whole did."""
        edges = _edges(stored.means)
        moved = np.abs(self.means - stored.means)
        if np.any(moved > MEAN_TOL + MEAN_TOL_PER_STD * stored.stds + MEAN_TOL_PER_EDGE * edges):
            return False
        moved = moved / (1 + SPREAD_PER_STD * stored.stds + SPREAD_PER_EDGE * edges)
        if np.any(moved > max(SPREAD_FLOOR, SPREAD_TOL * np.percentile(moved, SPREAD_PERCENTILE))):
            return False
        texture = np.abs(np.log((self.stds + STD_FLOOR) / (stored.stds + STD_FLOOR)))
        if np.any(texture > STD_LOG_TOL):
            return False
        chroma_tol = CHROMA_TOL + CHROMA_TOL_PER_EDGE * np.maximum(*map(_edges, stored.chroma))
        chroma = np.clip(self.chroma, -_CHROMA_CLIP, _CHROMA_CLIP)  # as stored
        return bool(np.all(np.abs(chroma - stored.chroma) <= chroma_tol))


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
    return Fingerprint(sha256_hex(data), pixels_sha256(img), tuple(phash_probes(img.convert("L"))),
                       Signature.of(img))


class CachedVerdict(BaseModel):
    """A cache value (JSON). Strict: a string where a number belongs is invalid, not coerced."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[4]
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
