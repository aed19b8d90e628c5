"""Words drawn onto an image: a confound breaker for training and a probe for evaluation.

Why: the AI images that can be had (prompt galleries) are full of posters, signs, captions and
labels, while the real photos (clothes on floors, film scans, camera samples) hold almost no text.
A detector trained on them learns "text means AI": starter-v2 scored real photos of a book page,
handwritten notes, a shop front and menu boards at 0.999, and words drawn onto its own training
reals raised their median score from 0.002 to 0.118. Drawing words onto both classes alike
(`PrepConfig.text_overlay`) takes the cue away; `featdistill eval --text` measures how much of it
a bundle has left (the `text/words` condition: every image with words drawn on).

The drawing is plain: Pillow's built-in scalable font (no font files, so every machine draws the
same), random words, sizes, colours and places, sometimes on a sign-like box, sometimes outlined.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Words of signs, menus, labels, captions and notes; digits and prices too.
WORDS = (
    "OPEN SALE EXIT STOP Menu Coffee Tea Bakery Pharmacy Hotel Station Platform Market Street Ave "
    "Road Park Museum Library Welcome Thank you Notes Monday Friday Chapter Page Total Price "
    "Receipt Order Fresh Daily Special Parking No Entry Push Pull Info Tickets Gate Floor Room "
    "Kitchen Bar Pizza Burger Sushi Noodles Books News Photo Studio Garden Hall City Center "
    "2024 2025 12:30 09:00 $4.99 3.50 EUR 100% 24h No. 7 A4 B2 Tel. www Sale! NEW Best Love Happy "
    "Birthday Summer Winter Spring Autumn Beach Sea Mountain Lake River Bridge Tower Square"
).split()


@functools.lru_cache(maxsize=64)  # in the training loader: parse the built-in font once per size
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator) -> str:
    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(1, 4)))]
    text = " ".join(words)
    style = rng.random()
    return text.upper() if style < 0.3 else text.lower() if style < 0.45 else text


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def draw_words(img: Image.Image, rng: np.random.Generator, max_items: int = 3) -> Image.Image:
    """A copy of `img` (RGB) with 1..max_items phrases drawn on: each 5-16 % of the short side
    high, at a random place (it may run off the edge, as text in photos does), half of them on a
    filled box like a sign or label, a third with an outline."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    short = min(w, h)
    for _ in range(int(rng.integers(1, max_items + 1))):
        size = max(6, int(round(short * rng.uniform(0.05, 0.16))))
        font, text = _font(size), _phrase(rng)
        x = int(rng.integers(-size, max(1, w - size)))
        y = int(rng.integers(0, max(1, h - size)))
        fill = _colour(rng)
        if rng.random() < 0.5:
            left, top, right, bottom = draw.textbbox((x, y), text, font=font)
            pad = max(1, size // 4)
            draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=_colour(rng))
        stroke = int(max(1, size // 12)) if rng.random() < 0.33 else 0
        draw.text((x, y), text, font=font, fill=fill, stroke_width=stroke,
                  stroke_fill=_colour(rng) if stroke else None)
    return out
