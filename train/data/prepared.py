"""Prepared views, packed: the view bank's reference views made where the source images are, so
that a training node holding none of them builds the same bank.

A view bank (train.data.view_bank) opens each source image, prepares it (the confound breaker:
random crop, resize to about the expert's input size, JPEG re-encoding) and degrades copies of
that reference. The sources are gigabytes of full-size photos and renders; the prepared
references are 224-336 px JPEGs, tens of KB each. A GPU node reached through a thin link (a
rented accelerator, a CI runner) gets the pack instead: per image its prepared JPEG, exactly
the bytes `prepare` decoded, and the state of the image's random stream after preparation, so
the degraded views drawn there are the ones the source machine would draw. The bank built from
a pack equals the bank built from the sources (same digest, same rows up to the trunk's
arithmetic on that device).

Layout: `<dir>/pack.json` (what the pack was prepared with: prep, input size, seed) and
`<dir>/index.jsonl` (key, file, rng) with `<dir>/views/<sha256(key)[:24]>.jpg|.png`.
"""
from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from train.data.records import DataError, Sample
from train.data.samples import PrepConfig, open_sample, prepare_encoded
from train.progress import progress_bar

PACK_FORMAT = 1


def _meta(prep: PrepConfig, input_size: int, seed: int) -> dict[str, Any]:
    return {"format": PACK_FORMAT, "prep": prep.key_fields(), "input_size": input_size, "seed": seed}


def view_rng(seed: int, key: str) -> np.random.Generator:
    """The random stream of one image's views: fixed by (seed, key), as the view bank draws it."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def pack_views(samples: Sequence[Sample], prep: PrepConfig, input_size: int, seed: int,
               out: Path) -> dict[str, int]:
    """Write the prepared reference view of every sample under `out`; returns counts and bytes.
    Samples sharing a key must be the same file (the bank draws their views from the key)."""
    if not prep.enabled:
        raise DataError("pack: data.prep is off, so the references are the source images "
                        "themselves; there is nothing smaller to ship")
    out = Path(out)
    (out / "views").mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    written = size = 0
    with open(out / "index.jsonl", "w") as index:
        for sample in progress_bar(samples, "pack prepared views"):
            if sample.key in seen:
                if seen[sample.key] != sample.path:
                    raise DataError(f"pack: key {sample.key!r} names two files "
                                    f"({seen[sample.key]}, {sample.path})")
                continue
            seen[sample.key] = sample.path
            rng = view_rng(seed, sample.key)
            try:
                reference, encoded = prepare_encoded(open_sample(sample), prep, input_size, rng)
            except (ValueError, OSError) as exc:
                raise DataError(f"{sample.path}: cannot read training image ({exc})") from exc
            suffix = ".jpg"
            if encoded is None:  # not re-encoded (p_jpeg < 1): keep the pixels losslessly
                buf = io.BytesIO()
                reference.save(buf, format="PNG")
                encoded, suffix = buf.getvalue(), ".png"
            name = hashlib.sha256(sample.key.encode()).hexdigest()[:24] + suffix
            (out / "views" / name).write_bytes(encoded)
            index.write(json.dumps({"key": sample.key, "file": name,
                                    "rng": rng.bit_generator.state}) + "\n")
            written, size = written + 1, size + len(encoded)
    (out / "pack.json").write_text(json.dumps(_meta(prep, input_size, seed), indent=2))
    return {"images": written, "bytes": size}


class PreparedViews:
    """A pack, read: `get(key)` gives the prepared reference and the image's random stream,
    positioned where preparation left it, or None for a key the pack lacks."""

    def __init__(self, folder: str | Path, prep: PrepConfig, input_size: int, seed: int) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "pack.json"
        if not meta_path.is_file():
            raise DataError(f"{self.folder}: not a pack of prepared views (no pack.json)")
        meta = json.loads(meta_path.read_text())
        want = json.loads(json.dumps(_meta(prep, input_size, seed)))  # tuples as JSON lists
        if meta != want:
            raise DataError(f"{self.folder}: the pack was prepared with {meta}, this run "
                            f"prepares with {want}; pack again with this config")
        self._index: dict[str, tuple[str, dict]] = {}
        with open(self.folder / "index.jsonl") as index:
            for line in index:
                row = json.loads(line)
                self._index[row["key"]] = (row["file"], row["rng"])

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> tuple[Image.Image, np.random.Generator] | None:
        entry = self._index.get(key)
        if entry is None:
            return None
        file, state = entry
        with Image.open(self.folder / "views" / file) as img:
            reference = img.convert("RGB")
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        return reference, rng
