"""A contact sheet of the degradation catalogue: one row per operation, one column per level.

Tiles are shown at 1:1: the image is centre-cropped to a square and resized to the tile size
first, then degraded, so a 5 px blur looks like 5 px on screen. On a 160 px tile pixel-sized
parameters therefore look about 2.4 times stronger than on a 384 px training crop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from train.degrade.catalogue import OPERATIONS, Operation

LABEL_WIDTH = 190  # left column: operation name, family, alignment
HEADER_HEIGHT = 24  # top row: column titles
_CAPTION_HEIGHT = 14  # strip at the foot of a tile with the level value


def sheet_size(n_ops: int, n_levels: int, tile: int) -> tuple[int, int]:
    """(width, height) of a sheet with n_ops rows and an original column plus n_levels columns."""
    return LABEL_WIDTH + (1 + n_levels) * tile, HEADER_HEIGHT + n_ops * tile


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _square(img: Image.Image, tile: int) -> Image.Image:
    return ImageOps.fit(img.convert("RGB"), (tile, tile), Image.Resampling.BICUBIC)


def _format(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(_format(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_contact_sheet(
    img: Image.Image,
    out_path: str | Path,
    levels: Sequence[str] = ("mild", "medium", "severe"),
    tile: int = 160,
    ops_table: Mapping[str, Operation] = OPERATIONS,
    seed: int = 0,
) -> Path:
    """Draw every operation of ops_table at the named levels and save the grid as PNG."""
    base = _square(img, tile)
    width, height = sheet_size(len(ops_table), len(levels), tile)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(13), _font(11)
    for col, title in enumerate(("original", *levels)):
        draw.text((LABEL_WIDTH + col * tile + 4, 5), title, fill="black", font=font)
    for row, op in enumerate(ops_table.values()):
        top = HEADER_HEIGHT + row * tile
        draw.text((6, top + 6), op.name, fill="black", font=font)
        notes = [f"family: {op.family}", f"tier: {op.tier}", f"{len(op.levels)} levels"]
        if not op.aligned:
            notes.append("MISALIGNING")
        for i, note in enumerate(notes):
            if 26 + 16 * (i + 1) > tile:  # small tiles: drop what would spill into the next row
                break
            draw.text((6, top + 26 + 16 * i), note, fill=(90, 90, 90), font=small)
        sheet.paste(base, (LABEL_WIDTH, top))
        for col, level_name in enumerate(levels, start=1):
            index = op.level_index(level_name)
            out = op(base, index, np.random.default_rng(seed))
            left = LABEL_WIDTH + col * tile
            sheet.paste(out, (left, top))
            caption = f"L{index + 1}: {_format(op.levels[index])}"
            draw.rectangle((left, top + tile - _CAPTION_HEIGHT, left + tile - 1, top + tile - 1),
                           fill="black")
            draw.text((left + 3, top + tile - _CAPTION_HEIGHT), caption, fill="white", font=small)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, format="PNG")
    return out_path


def main_show(image_path: str | Path, out_path: str | Path) -> Path:
    """`featdistill degrade --show IMG --out sheet.png`: the contact sheet of one image."""
    with Image.open(image_path) as src:
        img = ImageOps.exif_transpose(src).convert("RGB")
    return render_contact_sheet(img, out_path)
