"""The photometric degradations of the basic and extended sets: `(img, value, rng) -> img`.

Every function takes a PIL RGB image, one level value and a `numpy.random.Generator` (the only
source of randomness, so a seed reproduces the output), and returns a new RGB image of the same
size. Pixel work is float32 in [0, 1] and is clipped and rounded back to uint8 at the end. Which
level values exist, how ops are grouped and sampled, and the geometric ops and re-encoding chains
(view changes and compositions of these) live in `train.degrade.catalogue`. The basic set follows the
KADID-10k / ARNIQA formulations its level values come from, reimplemented with numpy and PIL.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

Rng = np.random.Generator
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ----------------------------------------------------------------------------- helpers
def to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) * np.float32(1 / 255)


def to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(arr, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), "RGB")


def _lut(img: Image.Image, curve: np.ndarray) -> Image.Image:
    """Apply a per-channel tone curve given as 256 floats in [0, 1] (fast: PIL point)."""
    table = np.clip(np.round(curve * 255), 0, 255).astype(np.uint8).tolist()
    return img.point(table * 3)


def _luma(arr: np.ndarray) -> np.ndarray:
    return arr @ _LUMA


def _shift(arr: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moves by (dy, dx) pixels; the uncovered border repeats the edge."""
    h, w = arr.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return arr.take(ys, axis=0).take(xs, axis=1)


def _bilinear(arr: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample arr (H, W, C) at float coordinates (H, W), clamping at the border."""
    h, w = arr.shape[:2]
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.minimum(ys.astype(np.int32), h - 2)
    x0 = np.minimum(xs.astype(np.int32), w - 2)
    fy = (ys - y0)[..., None]
    fx = (xs - x0)[..., None]
    top = arr[y0, x0] * (1 - fx) + arr[y0, x0 + 1] * fx
    bottom = arr[y0 + 1, x0] * (1 - fx) + arr[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _disk_blur(arr: np.ndarray, radius: float) -> np.ndarray:
    """Uniform disk kernel, as one horizontal box sum (prefix sums) per kernel row."""
    r = int(np.ceil(radius))
    h, w = arr.shape[:2]
    pad = np.pad(arr, ((r, r), (r + 1, r), (0, 0)), mode="edge")
    pad[:, 0] = 0  # prefix sums need a leading zero column
    cs = np.cumsum(pad, axis=1)
    out = np.zeros_like(arr)
    count = 0
    for dy in range(-r, r + 1):
        k = int(np.floor(np.sqrt(max(radius * radius - dy * dy, 0.0))))
        rows = cs[r + dy : r + dy + h]
        out += rows[:, r + 1 + k : r + 1 + k + w] - rows[:, r - k : r - k + w]
        count += 2 * k + 1
    return out / count


def _box_h(arr: np.ndarray, half: int) -> np.ndarray:
    """Horizontal box blur of width 2*half+1 along axis 1."""
    pad = np.pad(arr, ((0, 0), (half + 1, half)) + ((0, 0),) * (arr.ndim - 2), mode="edge")
    pad[:, 0] = 0
    cs = np.cumsum(pad, axis=1)
    w = arr.shape[1]
    return (cs[:, 2 * half + 1 : 2 * half + 1 + w] - cs[:, :w]) / (2 * half + 1)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _random_direction(rng: Rng, length: float) -> tuple[int, int]:
    angle = rng.uniform(0, 2 * np.pi)
    return int(round(length * np.sin(angle))), int(round(length * np.cos(angle)))


def _natural_spline(xk: np.ndarray, yk: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Natural cubic spline through the knots, evaluated at x (KADID uses MATLAB's not-a-knot
    spline; for these tone curves the two differ only slightly near 0 and 1)."""
    n = len(xk)
    hk = np.diff(xk)
    a = np.zeros((n, n))
    b = np.zeros(n)
    a[0, 0] = a[-1, -1] = 1.0
    for i in range(1, n - 1):
        a[i, i - 1 : i + 2] = [hk[i - 1], 2 * (hk[i - 1] + hk[i]), hk[i]]
        b[i] = 6 * ((yk[i + 1] - yk[i]) / hk[i] - (yk[i] - yk[i - 1]) / hk[i - 1])
    m = np.linalg.solve(a, b)
    i = np.clip(np.searchsorted(xk, x, side="right") - 1, 0, n - 2)
    t0, t1 = x - xk[i], xk[i + 1] - x
    return (m[i] * t1**3 + m[i + 1] * t0**3) / (6 * hk[i]) + (
        (yk[i] / hk[i] - m[i] * hk[i] / 6) * t1 + (yk[i + 1] / hk[i] - m[i + 1] * hk[i] / 6) * t0
    )


_X256 = np.arange(256, dtype=np.float64) / 255


# ----------------------------------------------------------------------------- basic set
def gaussian_blur(img: Image.Image, sigma: float, rng: Rng) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))  # PIL's radius is the std dev


def lens_blur(img: Image.Image, radius: float, rng: Rng) -> Image.Image:
    return to_image(_disk_blur(to_float(img), radius))


def colour_shift(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """The green plane moves by `amount` px in a random direction (misregistered channels)."""
    arr = np.asarray(img).copy()
    dy, dx = _random_direction(rng, amount)
    arr[..., 1] = _shift(arr[..., 1:2], dy, dx)[..., 0]
    return Image.fromarray(arr, "RGB")


def saturation(img: Image.Image, factor: float, rng: Rng) -> Image.Image:
    """Chroma is multiplied by `factor`: 1 keeps, 0 is greyscale, < 0 flips hues (KADID sat-1)."""
    arr = to_float(img)
    grey = _luma(arr)[..., None]
    return to_image(grey + factor * (arr - grey))


def jpeg(img: Image.Image, quality: int, rng: Rng) -> Image.Image:
    return _jpeg(img, quality)


def white_noise(img: Image.Image, variance: float, rng: Rng) -> Image.Image:
    arr = to_float(img)
    noise = rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(np.sqrt(variance))
    return to_image(arr + noise)


def impulse_noise(img: Image.Image, density: float, rng: Rng) -> Image.Image:
    """Each channel value independently becomes 0 or 255 with probability `density`."""
    arr = np.asarray(img).copy()
    hit = rng.random(arr.shape, dtype=np.float32) < density
    arr[hit] = np.where(rng.random(int(hit.sum()), dtype=np.float32) < 0.5, 0, 255)
    return Image.fromarray(arr, "RGB")


def _parabola_curve(mid: float) -> np.ndarray:
    """Tone curve through (0,0), (0.5, mid), (1,1): the three-knot KADID `curves`."""
    return (2 - 4 * mid) * _X256**2 + (4 * mid - 1) * _X256


def brighten(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    return _lut(img, _parabola_curve(0.5 + amount / 2))


def darken(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    return _lut(img, _parabola_curve(0.5 - amount / 2))


def jitter(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Every pixel is resampled from a random offset of std `amount`*sqrt(5) px (KADID scatters
    five times with std `amount`; one pass with the summed variance is five times cheaper)."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    std = np.float32(amount * np.sqrt(5))
    ys = np.arange(h, dtype=np.float32)[:, None] + rng.standard_normal((h, w), np.float32) * std
    xs = np.arange(w, dtype=np.float32)[None, :] + rng.standard_normal((h, w), np.float32) * std
    return to_image(_bilinear(arr, ys, xs))


def quantisation(img: Image.Image, levels: int, rng: Rng) -> Image.Image:
    """`levels` equal bins per channel; each value becomes the centre of its bin."""
    step = 256 / levels
    return _lut(img, (np.floor(np.arange(256) / step) + 0.5) * step / 255)


def linear_contrast(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Spline tone curve through (0.3, 0.25 - a/4) and (0.7, 0.75 + a/4), as KADID: a = 0 is
    already a mild contrast increase, a > 0 stronger, a < 0 flattens the image."""
    xk = np.array([0, 0.3, 0.5, 0.7, 1.0])
    yk = np.array([0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0])
    return _lut(img, _natural_spline(xk, yk, _X256))


# ----------------------------------------------------------------------------- extended set
def jpeg_blockiness(img: Image.Image, quality: int, rng: Rng) -> Image.Image:
    return _jpeg(img, quality)


def compression_ringing(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Gibbs ringing: the difference between a hard and a soft low-pass at 0.35 x Nyquist (the
    oscillation a truncated transform leaves next to edges) is added with gain 10 x amount."""
    arr = to_float(img)
    pad = 16  # reflect padding keeps the FFT's wrap-around from ringing at the borders
    p = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    hh, ww = p.shape[:2]
    freq = np.hypot(np.fft.fftfreq(hh)[:, None], np.fft.rfftfreq(ww)[None, :]) / 0.5
    cutoff = 0.35
    band = (freq <= cutoff) - np.exp(-0.5 * (freq / (cutoff / 1.18)) ** 2)  # soft = 0.5 at cutoff
    spec = np.fft.rfft2(p, axes=(0, 1)) * band[..., None].astype(np.float32)
    ring = np.fft.irfft2(spec, s=(hh, ww), axes=(0, 1))[pad:-pad, pad:-pad]
    return to_image(arr + np.float32(10 * amount) * ring.astype(np.float32))


def gif_palette(img: Image.Image, colours: int, rng: Rng) -> Image.Image:
    """Adaptive palette of `colours` entries with Floyd-Steinberg dithering, as GIF encoders do."""
    # quantize() ignores `dither` when it builds the palette itself, hence two calls.
    palette = img.quantize(colors=int(colours), method=Image.Quantize.FASTOCTREE)
    return img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")


def colour_banding(img: Image.Image, bits: int, rng: Rng) -> Image.Image:
    """Each channel rounded to `bits` bits (2**bits evenly spaced values, black and white kept)."""
    top = 2 ** int(bits) - 1
    return _lut(img, np.round(_X256 * top) / top)


def pixel_shuffle(img: Image.Image, fraction: float, rng: Rng) -> Image.Image:
    """A `fraction` of the pixels is replaced by a random neighbour up to 3 px away."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    ys, xs = np.nonzero(rng.random((h, w), dtype=np.float32) < fraction)
    sy = np.clip(ys + rng.integers(-3, 4, ys.size), 0, h - 1)
    sx = np.clip(xs + rng.integers(-3, 4, xs.size), 0, w - 1)
    out = arr.copy()
    out[ys, xs] = arr[sy, sx]
    return Image.fromarray(out, "RGB")


def motion_blur(img: Image.Image, length: int, rng: Rng) -> Image.Image:
    """Mean of `length` copies along a centred line at a random angle (kernel length in px)."""
    arr = to_float(img)
    angle = rng.uniform(0, np.pi)
    out = np.zeros_like(arr)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, int(length)):
        out += _shift(arr, int(np.round(t * np.sin(angle))), int(np.round(t * np.cos(angle))))
    return to_image(out / int(length))


def defocus_blur(img: Image.Image, radius: float, rng: Rng) -> Image.Image:
    """Disk blur in linear light, so highlights spread into bright discs (unlike `lens_blur`)."""
    linear = to_float(img) ** 2.2
    return to_image(_disk_blur(linear, radius) ** (1 / 2.2))


def poisson_noise(img: Image.Image, peak: float, rng: Rng) -> Image.Image:
    """Photon counting with `peak` photons at white: lower peak, noisier."""
    arr = to_float(img)
    return to_image(rng.poisson(arr * peak).astype(np.float32) / np.float32(peak))


def speckle(img: Image.Image, variance: float, rng: Rng) -> Image.Image:
    arr = to_float(img)
    noise = rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(np.sqrt(variance))
    return to_image(arr + arr * noise)


def iso_noise(img: Image.Image, iso: float, rng: Rng) -> Image.Image:
    """Sensor noise at a given ISO: signal-dependent luminance noise (std 0.01 x sqrt(ISO/100) at
    mid-grey) plus blotchy chroma noise drawn at half resolution."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    std = np.float32(0.01 * np.sqrt(iso / 100))
    lum = rng.standard_normal((h, w), np.float32) * std * np.sqrt(0.1 + _luma(arr)) / 0.775
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), np.float32) * (0.6 * std)
    chroma = np.repeat(np.repeat(chroma, 2, axis=0), 2, axis=1)[:h, :w]
    return to_image(arr + lum[..., None] + chroma)


def film_grain(img: Image.Image, strength: float, rng: Rng) -> Image.Image:
    """Monochrome grain of std `strength`, correlated over ~2 px, strongest in the mid-tones."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    grain = rng.standard_normal((h, w), np.float32)
    for axis in (0, 1):  # [1, 2, 1] / 4 along each axis: grain ~2 px, std x 0.375
        grain = (2 * grain + np.roll(grain, 1, axis) + np.roll(grain, -1, axis)) / 4
    grain *= np.float32(8 / 3)
    midtones = 1 - (2 * _luma(arr) - 1) ** 2
    return to_image(arr + (strength * grain * (0.3 + 0.7 * midtones))[..., None])


def salt_and_pepper(img: Image.Image, density: float, rng: Rng) -> Image.Image:
    """A `density` fraction of whole pixels becomes black or white."""
    arr = np.asarray(img).copy()
    ys, xs = np.nonzero(rng.random(arr.shape[:2], dtype=np.float32) < density)
    arr[ys, xs] = np.where(rng.random(ys.size) < 0.5, 0, 255).astype(np.uint8)[:, None]
    return Image.fromarray(arr, "RGB")


def colour_bleed(img: Image.Image, pixels: int, rng: Rng) -> Image.Image:
    """Chroma (YCbCr) smeared and delayed to the right by `pixels` px, as on analogue video."""
    ycc = np.asarray(img.convert("YCbCr"), dtype=np.float32)
    chroma = _shift(_box_h(ycc[..., 1:], int(pixels)), 0, int(pixels))
    out = np.concatenate([ycc[..., :1], chroma], axis=2)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "YCbCr").convert("RGB")


def light_leak(img: Image.Image, strength: float, rng: Rng) -> Image.Image:
    """A warm glow from a random point on the border, screen-blended with peak `strength`."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    side, pos = rng.integers(4), rng.random()
    cy, cx = [(0, pos * w), (h, pos * w), (pos * h, 0), (pos * h, w)][side]
    reach = rng.uniform(0.5, 0.9) * np.hypot(h, w)
    d2 = ((np.arange(h)[:, None] - cy) ** 2 + (np.arange(w)[None, :] - cx) ** 2) / reach**2
    glow = np.exp(-3 * d2).astype(np.float32)[..., None]
    colour = np.array([1.0, rng.uniform(0.35, 0.75), rng.uniform(0.05, 0.3)], np.float32)
    leak = strength * glow * colour
    return to_image(1 - (1 - arr) * (1 - leak))


def fading(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Towards an old print: lifted blacks, lowered whites, half the saturation, a yellow cast."""
    arr = to_float(img)
    faded = 0.22 + 0.6 * (0.5 * arr + 0.5 * _luma(arr)[..., None])
    faded = faded * np.array([1.06, 1.0, 0.85], np.float32)
    return to_image((1 - amount) * arr + amount * faded)


def digital_glitch(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Horizontal bands covering an `amount` fraction of the rows are displaced (wrapping), and
    some of them have their channels swapped."""
    arr = np.asarray(img).copy()
    h, w = arr.shape[:2]
    covered = 0
    while covered < amount * h:
        band = int(rng.integers(max(1, h // 60), max(2, h // 12)))
        y0 = int(rng.integers(0, h - band + 1))
        shift = int(rng.integers(-w // 8, w // 8 + 1))
        arr[y0 : y0 + band] = np.roll(arr[y0 : y0 + band], shift, axis=1)
        if rng.random() < 0.4:
            arr[y0 : y0 + band] = arr[y0 : y0 + band][..., rng.permutation(3)]
        covered += band
    return Image.fromarray(arr, "RGB")


def water_drops(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """round(25 x amount) drops on the lens; each shows a shrunken, inverted view of its
    surroundings (a drop is a small lens) and is slightly brighter."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    ys = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    xs = np.tile(np.arange(w, dtype=np.float32)[None, :], (h, 1))
    lit = np.zeros((h, w), np.float32)
    for _ in range(max(1, int(round(25 * amount)))):
        r = rng.uniform(0.03, 0.08) * min(h, w)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, h))
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, w))
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        inside = dy**2 + dx**2 < r * r
        ys[y0:y1, x0:x1] = np.where(inside, cy - 1.5 * dy, ys[y0:y1, x0:x1])
        xs[y0:y1, x0:x1] = np.where(inside, cx - 1.5 * dx, xs[y0:y1, x0:x1])
        lit[y0:y1, x0:x1] = np.maximum(lit[y0:y1, x0:x1], inside * 0.08)
    return to_image(_bilinear(arr, ys, xs) + lit[..., None])


def night_vision(img: Image.Image, amount: float, rng: Rng) -> Image.Image:
    """Amplified green monochrome with noise and a vignette, blended in by `amount`."""
    arr = to_float(img)
    h, w = arr.shape[:2]
    gain = np.clip(_luma(arr) * 1.8 + 0.05, 0, 1)
    gain = gain + rng.standard_normal((h, w), np.float32) * np.float32(0.06)
    r2 = ((np.arange(h)[:, None] / h - 0.5) ** 2 + (np.arange(w)[None, :] / w - 0.5) ** 2) * 2
    vignette = (1 - 0.7 * r2).astype(np.float32)
    nv = (gain * vignette)[..., None] * np.array([0.15, 1.0, 0.2], np.float32)
    return to_image((1 - amount) * arr + amount * nv)


def ghosting(img: Image.Image, value: tuple[int, float], rng: Rng) -> Image.Image:
    """A faint copy offset by `value[0]` px in a random direction, mixed with weight `value[1]`."""
    offset, intensity = value
    arr = to_float(img)
    dy, dx = _random_direction(rng, offset)
    return to_image((1 - intensity) * arr + intensity * _shift(arr, dy, dx))
