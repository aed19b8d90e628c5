"""The degradation catalogue (a registry of operations) and the policy that samples from it.

An `Operation` is data: a name, the family it is reported under in the robustness table, the
group that makes two operations mutually exclusive when sampling, its level values from mild to
severe, whether it keeps spatial alignment, and its pixel function: the photometric ones live in
`train.degrade.ops`; the two geometric ops and the three re-encoding chains are defined here.

Basic set (12 operations, 7 groups, 5 levels each; the level values are the paper's, which are the
KADID-10k / ARNIQA values, and the groups are ARNIQA's groups restricted to these 12 operations):

    blur         gaussian_blur, lens_blur
    colour       colour_shift, saturation
    compression  jpeg
    noise        white_noise, impulse_noise
    brightness   brighten, darken
    spatial      jitter, quantisation
    contrast     linear_contrast

Where the paper gives only the two ends of a basic range, the three middle values are KADID's.
`saturation` levels {0.4, 0.2, 0.1, 0, -0.4} are read as the factor chroma is multiplied by (as in
KADID's colour saturation 1): 0.4 already desaturates, 0 is greyscale, -0.4 also flips hues. Read
as an additive change (factor 1 + v), level 1 would oversaturate and level 4 would do nothing,
which does not fit a mild-to-severe scale.

Extended set (19 operations, 15 levels linearly interpolated between the paper's mild and severe
values, integers rounded). Its group is its family, so at most one op per family is drawn.
Geometry (crop_shift, crop_scale) and re-encoding chains have 5 levels of our choosing.

Families (rows of the robustness table) cut across the sets: blur, colour, compression, noise,
quantisation, spatial, tone, overlay, geometry, reencode.

Operations that break alignment are the seven the paper names plus the two geometric ones; the
chains return to the input size on the same pixel grid and count as aligned.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from train.degrade import ops

Rng = np.random.Generator
OpFn = Callable[[Image.Image, Any, Rng], Image.Image]
AppliedOp = tuple[str, int]  # (operation name, level index)
TIERS = ("basic", "extended", "geometry", "chain")


@dataclass(frozen=True)
class Operation:
    name: str
    family: str  # row of the robustness table: blur, noise, compression, ...
    group: str  # sampling exclusion: at most one operation per group in one draw
    tier: str  # one of TIERS
    levels: tuple[Any, ...]  # level values, mild -> severe
    aligned: bool  # token i of the output covers the same image area as token i of the input
    fn: OpFn

    def __call__(self, img: Image.Image, level: int, rng: Rng) -> Image.Image:
        return self.fn(img, self.levels[level], rng)

    def level_index(self, name: str) -> int:
        """'mild' -> 0, 'medium' -> the middle level, 'severe' -> the last."""
        n = len(self.levels)
        return {"mild": 0, "medium": n // 2, "severe": n - 1}[name]


def crop_shift(img: Image.Image, fraction: float, rng: Rng) -> Image.Image:
    """The view moves by `fraction` of the size in a random direction; reflect padding."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = int(round(fraction * h * np.sin(angle))), int(round(fraction * w * np.cos(angle)))
    pad = np.pad(arr, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="reflect")
    return Image.fromarray(pad[abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w])


def crop_scale(img: Image.Image, factor: float, rng: Rng) -> Image.Image:
    """Zoom about the centre by `factor` (> 1) or, with p = 0.5, by 1/`factor`; zooming out is
    filled by reflect padding. The level is the magnitude: 1.25 covers both 1.25x and 0.8x."""
    w, h = img.size
    if rng.random() < 0.5:
        cw, ch = w / factor, h / factor
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return img.resize((w, h), Image.Resampling.BICUBIC, box=box)
    sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
    small = np.asarray(img.resize((sw, sh), Image.Resampling.BICUBIC))
    top, left = (h - sh) // 2, (w - sw) // 2
    pad = ((top, h - sh - top), (left, w - sw - left), (0, 0))
    return Image.fromarray(np.pad(small, pad, mode="reflect"))


def _resized(img: Image.Image, scale: float) -> Image.Image:
    w, h = img.size
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


# Re-encoding chains, composed from the basic ops; value = (scale or blur sigma, JPEG quality).
# They end at the input size on the same pixel grid, so they count as aligned.
def resize_then_jpeg(img: Image.Image, value: tuple[float, int], rng: Rng) -> Image.Image:
    small = ops.jpeg(_resized(img, value[0]), value[1], rng)
    return small.resize(img.size, Image.Resampling.BICUBIC)


def jpeg_then_resize(img: Image.Image, value: tuple[float, int], rng: Rng) -> Image.Image:
    small = _resized(ops.jpeg(img, value[1], rng), value[0])
    return small.resize(img.size, Image.Resampling.BICUBIC)


def blur_then_jpeg(img: Image.Image, value: tuple[float, int], rng: Rng) -> Image.Image:
    return ops.jpeg(ops.gaussian_blur(img, value[0], rng), value[1], rng)


def _ramp(mild: float, severe: float, integer: bool = False, n: int = 15) -> tuple[Any, ...]:
    values = np.linspace(mild, severe, n)
    if integer:
        return tuple(int(round(v)) for v in values)
    return tuple(round(float(v), 4) for v in values)


def _build() -> Mapping[str, Operation]:
    def basic(name, group, family, levels, aligned=True):
        return Operation(name, family, group, "basic", tuple(levels), aligned, getattr(ops, name))

    def ext(name, family, levels, aligned=True):
        return Operation(name, family, family, "extended", levels, aligned, getattr(ops, name))

    def extra(fn, tier, family, levels):  # geometry never aligned; chains always are
        return Operation(fn.__name__, family, family, tier, tuple(levels), tier == "chain", fn)

    scale_quality = [(0.9, 85), (0.75, 70), (0.6, 55), (0.5, 40), (0.4, 25)]
    sigma_quality = [(0.5, 85), (1.0, 70), (1.5, 55), (2.0, 40), (3.0, 25)]
    catalogue = [
        basic("gaussian_blur", "blur", "blur", [0.1, 0.5, 1, 2, 5]),
        basic("lens_blur", "blur", "blur", [1, 2, 4, 6, 8]),
        basic("colour_shift", "colour", "colour", [1, 3, 6, 8, 12], aligned=False),
        basic("saturation", "colour", "colour", [0.4, 0.2, 0.1, 0, -0.4]),
        basic("jpeg", "compression", "compression", [43, 36, 24, 7, 4]),
        basic("white_noise", "noise", "noise", [0.001, 0.002, 0.003, 0.005, 0.01]),
        basic("impulse_noise", "noise", "noise", [0.001, 0.005, 0.01, 0.02, 0.03]),
        basic("brighten", "brightness", "tone", [0.1, 0.2, 0.4, 0.7, 1.1]),
        basic("darken", "brightness", "tone", [0.05, 0.1, 0.2, 0.4, 0.8]),
        basic("jitter", "spatial", "spatial", [0.05, 0.1, 0.2, 0.5, 1], aligned=False),
        basic("quantisation", "spatial", "quantisation", [20, 16, 13, 10, 7]),
        basic("linear_contrast", "contrast", "tone", [0, 0.15, -0.4, 0.3, -0.6]),
        ext("jpeg_blockiness", "compression", _ramp(40, 5, integer=True)),
        ext("compression_ringing", "compression", _ramp(0.05, 0.3)),
        ext("gif_palette", "quantisation", _ramp(128, 16, integer=True)),
        ext("colour_banding", "quantisation", _ramp(7, 3, integer=True)),
        ext("pixel_shuffle", "spatial", _ramp(0.01, 0.1), aligned=False),
        ext("motion_blur", "blur", _ramp(5, 21, integer=True)),
        ext("defocus_blur", "blur", _ramp(1, 5)),
        ext("poisson_noise", "noise", _ramp(100, 10)),
        ext("speckle", "noise", _ramp(0.01, 0.15)),
        ext("iso_noise", "noise", _ramp(400, 6400, integer=True)),
        ext("film_grain", "noise", _ramp(0.02, 0.15)),
        ext("salt_and_pepper", "noise", _ramp(0.005, 0.05)),
        ext("colour_bleed", "colour", _ramp(1, 6, integer=True), aligned=False),
        ext("light_leak", "overlay", _ramp(0.1, 0.6)),
        ext("fading", "colour", _ramp(0.1, 0.6)),
        ext("digital_glitch", "spatial", _ramp(0.05, 0.25), aligned=False),
        ext("water_drops", "overlay", _ramp(0.1, 0.8), aligned=False),
        ext("night_vision", "colour", _ramp(0.2, 1.0)),
        ext("ghosting", "overlay", tuple(zip(_ramp(2, 15, True), _ramp(0.1, 0.4))), aligned=False),
        extra(crop_shift, "geometry", "geometry", [0.03, 0.06, 0.09, 0.12, 0.15]),
        extra(crop_scale, "geometry", "geometry", [1.05, 1.1, 1.15, 1.2, 1.25]),
        extra(resize_then_jpeg, "chain", "reencode", scale_quality),
        extra(jpeg_then_resize, "chain", "reencode", scale_quality),
        extra(blur_then_jpeg, "chain", "reencode", sigma_quality),
    ]
    return MappingProxyType({o.name: o for o in catalogue})


# Read-only and built from pure functions: a table, not state.
OPERATIONS: Mapping[str, Operation] = _build()


def half_gaussian_weights(n_levels: int, sigma: float) -> np.ndarray:
    """P(level i) proportional to exp(-i^2 / (2 sigma^2)): the mildest level is the most likely."""
    w = np.exp(-(np.arange(n_levels) ** 2) / (2.0 * sigma**2))
    return w / w.sum()


@dataclass(frozen=True)
class DegradationPolicy:
    p_degrade: float = 0.8  # an image is degraded at all (paper)
    p_extended: float = 0.5  # photometric ops come from the extended set, else the basic (paper)
    min_ops: int = 1  # operations per degraded image, geometry and chain included (paper)
    max_ops: int = 3
    basic_level_sigma: float = 2.5  # half-Gaussian over the 5 basic level indices (paper)
    # Extended ops have 15 levels; sigma 2.5 over 15 indices would leave the severe half nearly
    # unused, so the same shape is stretched: 2.5 x 15 / 5.
    extended_level_sigma: float = 7.5
    extra_level_sigma: float = 2.5  # geometry and chains, 5 levels each
    # Our choice: a crop-shift/crop-scale opens the list (a crop happens before encoding) in 20 %
    # of degraded images; never when aligned_only.
    p_geometry: float = 0.2
    # Our choice: a re-encoding chain closes the list (sharing sites re-encode last) in 20 %.
    p_chain: float = 0.2
    aligned_only: bool = False  # keep only ops that keep token i on the same image area

    def candidates(self, tier: str, table: Mapping[str, Operation] = OPERATIONS) -> list[Operation]:
        return [o for o in table.values()
                if o.tier == tier and (o.aligned or not self.aligned_only)]

    def _level(self, op: Operation, rng: Rng) -> int:
        sigma = {"basic": self.basic_level_sigma, "extended": self.extended_level_sigma}.get(
            op.tier, self.extra_level_sigma)
        return int(rng.choice(len(op.levels), p=half_gaussian_weights(len(op.levels), sigma)))

    def _one_of(self, tier: str, rng: Rng, table: Mapping[str, Operation]) -> list[AppliedOp]:
        pool = self.candidates(tier, table)
        if not pool:
            return []
        op = pool[int(rng.integers(len(pool)))]
        return [(op.name, self._level(op, rng))]

    def sample(self, rng: Rng, table: Mapping[str, Operation] = OPERATIONS) -> list[AppliedOp]:
        """The operations for one image, in the order they are to be applied ([] = clean).
        Slots: n in [min_ops, max_ops]; a geometry op and a chain take one each when drawn, the
        rest go to distinct groups of one photometric set."""
        if rng.random() >= self.p_degrade:
            return []
        n = int(rng.integers(self.min_ops, self.max_ops + 1))
        head = self._one_of("geometry", rng, table) if rng.random() < self.p_geometry else []
        tail = self._one_of("chain", rng, table) if rng.random() < self.p_chain else []
        tail = tail[: max(0, n - len(head))]
        pool = self.candidates("extended" if rng.random() < self.p_extended else "basic", table)
        groups = sorted({o.group for o in pool})
        middle = []
        for g in rng.permutation(len(groups))[: max(0, n - len(head) - len(tail))]:
            members = [o for o in pool if o.group == groups[g]]
            op = members[int(rng.integers(len(members)))]
            middle.append((op.name, self._level(op, rng)))
        return head + middle + tail

    def apply(self, img: Image.Image, rng: Rng) -> tuple[Image.Image, list[AppliedOp]]:
        applied = self.sample(rng)
        return apply_ops(img, applied, rng), applied


def apply_ops(img: Image.Image, applied: Sequence[AppliedOp], rng: Rng,
              table: Mapping[str, Operation] = OPERATIONS) -> Image.Image:
    """Apply (name, level index) pairs in order. Random parameters (noise, angles) come from rng,
    so two views given generators in the same state get identical degradations."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    for name, level in applied:
        img = table[name](img, level, rng)
    return img
