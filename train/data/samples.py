"""From a Sample to model inputs: decode, confound-breaking preparation, degradation, to_tensor.

All of it runs in DataLoader workers. Every random choice for one draw comes from one numpy
generator seeded by (run seed, epoch, position in the epoch), never from worker or global state,
so the batches of an epoch are the same whatever num_workers is and after a resume.

The input tensor is made by `detector.preprocess.to_tensor` with the expert's own PreprocessSpec:
the very function inference uses.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from detector.images import load_image_file
from detector.preprocess import to_tensor
from detector.spec import PreprocessSpec
from train.data import toy
from train.data.records import Sample
from train.data.text_overlay import draw_words
from train.degrade.catalogue import DegradationPolicy, apply_ops

NO_DEGRADATION = DegradationPolicy(p_degrade=0.0)


@dataclass(frozen=True)
class PrepConfig:
    """Confound breaking: both classes are cropped, resized and re-encoded the same random way, so
    file format, JPEG history and native size stop telling real from fake. Runs before the
    degradation policy."""

    enabled: bool = False
    crop_fraction: tuple[float, float] = (0.6, 1.0)  # square crop side / short side, uniform
    # short side after the resize, in units of the expert's input size, uniform
    resize: tuple[float, float] = (1.0, 1.5)
    p_jpeg: float = 1.0  # re-encode as JPEG with this probability
    jpeg_quality: tuple[int, int] = (65, 100)  # uniform, inclusive
    # Probability of drawing words on the crop before the re-encoding (train.data.text_overlay):
    # text in the AI galleries and not in the photos is a cue of its own.
    text_overlay: float = 0.0

    def key_fields(self) -> dict[str, Any]:
        """What names a bank or pack of views made with this prep. Fields added after banks were
        built are left out at their "off" value, so those banks keep their names."""
        fields = asdict(self)
        for name, off in _ADDED_LATER.items():
            if fields[name] == off:
                del fields[name]
        return fields


_ADDED_LATER = {"text_overlay": 0.0}


def open_sample(sample: Sample) -> Image.Image:
    if toy.is_toy(sample.path):
        return toy.render(sample.path)
    return load_image_file(sample.path)


def prepare(img: Image.Image, cfg: PrepConfig, input_size: int, rng: np.random.Generator) -> Image.Image:
    """Random square crop, random resize, words drawn sometimes, random JPEG re-encoding (the
    confound breaker)."""
    return prepare_encoded(img, cfg, input_size, rng)[0]


def prepare_encoded(img: Image.Image, cfg: PrepConfig, input_size: int,
                    rng: np.random.Generator) -> tuple[Image.Image, bytes | None]:
    """`prepare`, plus the JPEG file its output was decoded from (None when it was not
    re-encoded): those bytes are the prepared image exactly, a few tens of KB instead of the
    source file (train.data.prepared ships them to a training node that lacks the sources)."""
    if not cfg.enabled:
        return img, None
    w, h = img.size
    side = max(1, int(round(min(w, h) * rng.uniform(*cfg.crop_fraction))))
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    target = max(1, int(round(input_size * rng.uniform(*cfg.resize))))
    img = img.resize((target, target), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    # Drawn only where asked, so that the random stream of a prep without it is unchanged.
    if cfg.text_overlay > 0 and rng.random() < cfg.text_overlay:
        img = draw_words(img, rng)
    if rng.random() < cfg.p_jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
        encoded = buf.getvalue()
        return Image.open(io.BytesIO(encoded)).convert("RGB"), encoded
    return img, None


class ViewDataset(Dataset):
    """Items are (index, epoch, position) from EpochSampler, or a plain index (draw 0).

    one view (stage 1, validation): {"pixels", "label", "index"}, pixels degraded by `policy`;
    two views (stage 2): adds "reference", the prepared image without degradation, while "pixels"
    is the same image through the policy, which must then be aligned_only so that token i of
    both views covers the same area.
    """

    def __init__(self, samples: Sequence[Sample], preprocess: PreprocessSpec,
                 policy: DegradationPolicy = NO_DEGRADATION, prep: PrepConfig = PrepConfig(),
                 seed: int = 0, two_views: bool = False) -> None:
        if two_views and not policy.aligned_only:
            raise ValueError("two-view (distillation) samples need an aligned_only policy")
        self.samples = list(samples)
        self.preprocess, self.policy, self.prep = preprocess, policy, prep
        self.seed, self.two_views = seed, two_views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: Any) -> dict[str, Any]:
        index, epoch, position = item if isinstance(item, tuple) else (int(item), 0, int(item))
        rng = np.random.default_rng([self.seed, epoch, position])
        sample = self.samples[index]
        try:
            img = open_sample(sample)
        except (ValueError, OSError) as exc:
            raise RuntimeError(f"{sample.path}: cannot read training image ({exc})") from exc
        img = prepare(img, self.prep, self.preprocess.size, rng)
        degraded = apply_ops(img, self.policy.sample(rng), rng)
        out = {"pixels": to_tensor(degraded, self.preprocess), "label": sample.label, "index": index}
        if self.two_views:
            out["reference"] = to_tensor(img, self.preprocess)
        return out


class EpochSampler(Sampler):
    """Draws `num_samples` indices per epoch, weighted with replacement (or a permutation when no
    weights are given), from a generator seeded by (seed, epoch): set_epoch() fixes an epoch's
    order, so a resumed run draws what an uninterrupted one would have."""

    def __init__(self, size: int, num_samples: int = 0, weights: np.ndarray | None = None,
                 seed: int = 0) -> None:
        self.size, self.weights, self.seed = size, weights, seed
        self.num_samples = num_samples or size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        seed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(seed))
        if self.weights is not None:
            w = torch.as_tensor(self.weights, dtype=torch.float64)
            order = torch.multinomial(w, self.num_samples, replacement=True, generator=g)
        else:
            order = torch.cat([torch.randperm(self.size, generator=g)
                               for _ in range(-(-self.num_samples // self.size))])[: self.num_samples]
        for position, index in enumerate(order.tolist()):
            yield (index, self.epoch, position)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int,
                sampler: Sampler | None = None, seed: int = 0) -> DataLoader:
    """Decoding and augmentation run in `num_workers` processes (0: in this one)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),  # worker seeds: never the global RNG
    )
