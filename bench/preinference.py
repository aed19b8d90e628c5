"""What an image costs before inference, on one core: fetch + decode + hash + preprocess, the old
path (full-size decode) against the new one (decoded reduced to the detector's decode_side).

    python bench/preinference.py [--photos 12] [--megapixels 12,1] [--presets starter,paper]
                                 [--repeat 3] [--workers 2]

Photos: real photos of ../shared/data/aigi/real made phone-like by bench/photos.py (12 MP and
1 MP JPEGs, quality 92, sensor noise and sharpening, camera EXIF, a mix of EXIF orientations),
generated once under the cache folder, never in the repository.

Stages, as the worker runs them: fetch (ImageFetcher on file://, from the page cache), decode
(detector.images.decode_image), hash (sha256 of the bytes + pHash of the decoded image),
preprocess (detector.preprocess.to_tensor for each distinct expert input). Each stage is timed
in CPU time of the calling thread (time.thread_time), best of --repeat passes per image, so that
other processes sharing the machine inflate the figures little; the wall time of the whole
single-thread pass is reported beside it. The old path is today's decode_image without
min_side, which makes one full-size copy fewer than the decode it replaces.

Then the parallelism check, new path, starter preset: the same images through N threads (the
worker's fetch pool) and through N processes, images/s of wall time. Threads that match the
processes mean the work is not held back by the GIL.
Writes bench/results/preinference.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from bench.photos import CACHE, cached_phone_files  # noqa: E402
from detector import presets  # noqa: E402
from detector.images import decode_image  # noqa: E402
from detector.preprocess import DECODE_MARGIN, decode_side, to_tensor  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.hashing import phash, sha256_hex  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "real"
STAGES = ("fetch", "decode", "hash", "preprocess")


def source_photos(count: int) -> list[Path]:
    """`count` real photos spread over the folder (sorted, every k-th): fixed between runs."""
    paths = sorted(p for p in REAL.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"no photos under {REAL}")
    return paths[:: max(1, len(paths) // count)][:count]


def one_image(fetcher: ImageFetcher, uri: str, specs, min_side: int | None) -> dict[str, float]:
    """Seconds of this thread's CPU per stage, for one image."""
    clock = time.thread_time
    t0 = clock()
    data = fetcher.fetch(uri)
    t1 = clock()
    img = decode_image(data, min_side=min_side)
    t2 = clock()
    sha256_hex(data), phash(img)
    t3 = clock()
    for spec in specs:
        to_tensor(img, spec)
    t4 = clock()
    return dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def single_core(paths: list[Path], specs, min_side: int | None, repeat: int) -> dict:
    fetcher = ImageFetcher(FetchConfig(file_roots=(str(CACHE),)))
    best = []
    wall = time.perf_counter()
    for path in paths:
        runs = [one_image(fetcher, path.as_uri(), specs, min_side) for _ in range(repeat)]
        best.append({s: min(r[s] for r in runs) for s in STAGES})
    wall = (time.perf_counter() - wall) / (len(paths) * repeat)
    ms = {s: 1000 * float(np.mean([b[s] for b in best])) for s in STAGES}
    total = sum(ms.values())
    return {"ms_per_image": {k: round(v, 2) for k, v in ms.items()}, "ms_total": round(total, 2),
            "images_per_s_per_core": round(1000 / total, 1),
            "wall_ms_per_image": round(1000 * wall, 2),
            "ms_per_photo": [round(1000 * sum(b.values()), 1) for b in best]}


_worker_state: dict = {}


def _init_worker(specs, min_side) -> None:
    _worker_state.update(fetcher=ImageFetcher(FetchConfig(file_roots=(str(CACHE),))),
                         specs=specs, min_side=min_side)


def _task(uri: str) -> float:
    """One image's pool work; returns the CPU seconds it took (this thread's)."""
    s = _worker_state
    return sum(one_image(s["fetcher"], uri, s["specs"], s["min_side"]).values())


def parallel(paths: list[Path], specs, min_side: int, workers: int, rounds: int) -> dict:
    """images/s of wall time through `workers` threads and through `workers` processes, and how
    many cores their tasks kept busy (CPU seconds of the tasks / wall seconds)."""
    uris = [p.as_uri() for p in paths] * rounds
    out = {}
    _init_worker(specs, min_side)
    for name, pool in (("threads", ThreadPoolExecutor(workers)),
                       ("processes", ProcessPoolExecutor(workers, initializer=_init_worker,
                                                         initargs=(specs, min_side)))):
        with pool:
            list(pool.map(_task, uris[:workers * 2]))  # warm up (process start, imports)
            t0 = time.perf_counter()
            cpu = sum(pool.map(_task, uris))
            wall = time.perf_counter() - t0
        out[name] = {"images_per_s": round(len(uris) / wall, 1),
                     "cores_busy": round(cpu / wall, 2)}
    out["threads_vs_processes"] = round(out["threads"]["images_per_s"]
                                        / out["processes"]["images_per_s"], 2)
    return out


def bytes_sweep(source: Path, specs, side: int, repeat: int) -> list[dict]:
    """One photo at 12 MP with more or less sensor noise: the reduced decode's cost against the
    file's size. What stays is the entropy decoding, which no draft skips."""
    from bench.photos import phone_file
    from PIL import Image

    folder = CACHE / "sweep"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    fetcher = ImageFetcher(FetchConfig(file_roots=(str(CACHE),)))
    for noise in (0.0, 1.0, 2.0, 3.0, 5.0):
        path = folder / f"{source.stem}-n{noise:g}.jpg"
        if not path.exists():
            with Image.open(source) as img:
                path.write_bytes(phone_file(img, 12.0, 1, seed=0, noise=noise))
        runs = [one_image(fetcher, path.as_uri(), specs, side) for _ in range(repeat)]
        rows.append({"noise": noise, "mb": round(path.stat().st_size / 1e6, 2),
                     "decode_ms": round(1000 * min(r["decode"] for r in runs), 2),
                     "total_ms": round(1000 * min(sum(r.values()) for r in runs), 2)})
    return rows


def photo_info(paths: list[Path]) -> dict:
    from PIL import Image

    sizes = [Image.open(p).size for p in paths]
    return {"count": len(paths),
            "megapixels_mean": round(float(np.mean([w * h for w, h in sizes])) / 1e6, 2),
            "mb_mean": round(float(np.mean([p.stat().st_size for p in paths])) / 1e6, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--megapixels", default="12,1")
    parser.add_argument("--presets", default="starter,paper")
    parser.add_argument("--margins", default=f"{DECODE_MARGIN:g},1.5",
                        help="decode margins of the new path (the first is the worker's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos, parallel")
    args = parser.parse_args(argv)
    sources = source_photos(args.photos)
    margins = [float(m) for m in args.margins.split(",")]
    result = {"photos": {}, "single_core": {}, "parallel": {}}
    for mp in (float(m) for m in args.megapixels.split(",")):
        paths = cached_phone_files(sources, mp, "JPEG", tag="preinference")
        key = f"{mp:g}mp"
        result["photos"][key] = photo_info(paths)
        for preset in args.presets.split(","):
            specs = list(dict.fromkeys(e.preprocess for e in presets.PRESETS[preset]().experts))
            row = {"old": single_core(paths, specs, None, args.repeat)}
            print(f"{key:>5} {preset:<8} old: {row['old']['ms_per_image']} "
                  f"= {row['old']['ms_total']} ms", flush=True)
            for margin in margins:
                side = decode_side(specs, margin)
                row[f"new@{margin:g}"] = new = {"decode_side": side,
                                                **single_core(paths, specs, side, args.repeat)}
                new["speedup"] = round(row["old"]["ms_total"] / new["ms_total"], 2)
                print(f"{key:>5} {preset:<8} new, margin {margin:g} (side {side}): "
                      f"{new['ms_per_image']} = {new['ms_total']} ms "
                      f"({new['images_per_s_per_core']} img/s/core)", flush=True)
            result["single_core"][f"{key}/{preset}"] = row
        specs = list(dict.fromkeys(e.preprocess for e in presets.starter().experts))
        result["parallel"][key] = par = {
            "fetch+decode+hash (the worker's pool today)": parallel(
                paths, [], decode_side(specs), args.workers, args.rounds),
            "fetch+decode+hash+preprocess (proposed)": parallel(
                paths, specs, decode_side(specs), args.workers, args.rounds)}
        for what, row in par.items():
            print(f"{key:>5} starter, {args.workers} workers, {what}: {row}", flush=True)
    specs = list(dict.fromkeys(e.preprocess for e in presets.starter().experts))
    result["bytes_sweep_12mp_starter"] = sweep = bytes_sweep(
        sources[0], specs, decode_side(specs), args.repeat)
    print("12 MP, new path, by file size:", sweep)
    print(f"wrote {write_json('preinference', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
