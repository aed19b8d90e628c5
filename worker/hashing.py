"""Hashes of an image for the verdict cache: a perceptual hash that finds candidates, and digests
that prove identity.

- pHash (64-bit DCT: the 8x8 lowest frequencies of a 32x32 grey thumbnail) is the cache's lookup
  key. A re-encode or a resize usually keeps it, not always: on photos (bench/cache_reuse.py)
  JPEG q50-95 re-encodes and 0.5-2x rescales keep the exact value 87-96% of the time. The bits
  that flip are the coefficients closest to the median, so a lookup also probes the keys with
  the weakest bits flipped (`phash_probes`), which finds 99.9% of them.
- pHash does NOT identify a picture: it ignores all but the coarsest structure, so an image with
  one region replaced or inpainted usually keeps it, and a collision can be crafted on purpose.
  A candidate found by pHash is reused only after worker/cache_match.py has verified it.
- sha256 of the bytes (same file) and of the decoded pixels (same picture in another container,
  or with other metadata) are the exact identities.

pHash rather than PDQ (Meta's 256-bit hash): measured in bench/cache_reuse.py, PDQ is not stable
enough to be an exact-match key (a 0.5x rescale flips about 16 of its 256 bits), so it would need
a Hamming-distance index instead of a Redis GET, and neither hash separates a local edit from a
re-encode at any distance; the verification does that, whatever the lookup hash.
"""
from __future__ import annotations

import hashlib
from itertools import combinations

import numpy as np
from PIL import Image

_SIZE = 32  # the image is reduced to 32x32 grey before the DCT
_KEEP = 8  # the 8x8 lowest frequencies carry the structure
WEAK_BITS = 4  # probes flip every subset of the 4 weakest bits: 16 keys per lookup


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(_SIZE)


def _phash_bits(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The 64 hash bits, and how far each coefficient lies from the median (small: fragile)."""
    grey = img if img.mode == "L" else img.convert("L")
    grey = grey.resize((_SIZE, _SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float64)
    coeffs = (_DCT @ pixels @ _DCT.T)[:_KEEP, :_KEEP].flatten()
    # Compare against the median of the low frequencies, leaving out the DC term (mean brightness).
    median = np.median(coeffs[1:])
    return coeffs > median, np.abs(coeffs - median)


def _hex(bits: np.ndarray) -> str:
    return int("".join("1" if b else "0" for b in bits), 2).to_bytes(8, "big").hex()


def phash(img: Image.Image) -> str:
    """64-bit perceptual hash as 16 hex characters."""
    return _hex(_phash_bits(img)[0])


def phash_probes(img: Image.Image, weak_bits: int = WEAK_BITS) -> list[str]:
    """The pHash first, then every variant with a subset of its `weak_bits` weakest bits flipped:
    the keys under which a re-encode of this picture may have been stored."""
    bits, margin = _phash_bits(img)
    weakest = np.argsort(margin, kind="stable")[:weak_bits]
    out = []
    for r in range(weak_bits + 1):
        for flip in combinations(weakest, r):
            probe = bits.copy()
            probe[list(flip)] ^= True
            out.append(_hex(probe))
    return out


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels_sha256(img: Image.Image) -> str:
    """Digest of the decoded pixels with their size and mode: equal for the same picture whatever
    the container, compression (if lossless) or metadata."""
    h = hashlib.sha256(f"{img.mode} {img.width}x{img.height}\n".encode())
    h.update(img.tobytes())
    return h.hexdigest()
