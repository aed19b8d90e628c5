"""What an image costs before inference, on one core: fetch + decode + hash + preprocess, the old
path (full-size decode) against the new one (decoded reduced to the detector's decode_side), at
the worker's margin (DECODE_MARGIN) and the others asked for. The row `new@<margin>/jpeg0.667`
drafts JPEGs to 2/3 of the worker's side (1x the input side) instead of all of it: what that
would save, measured in the same run; bench/decode_fidelity.py measured what it costs in
scores, and it was refused (detector.images.JPEG_DRAFT_SHARE).

    python bench/preinference.py [--photos 12] [--sets 12mp,phone-mix,1mp]
        [--presets starter,paper] [--margins 1.5,2] [--repeat 3] [--workers 2] [--budget-ms 25]

Photos: real photos of ../shared/data/aigi/real made phone-like by bench/photos.py, generated
once under the cache folder, never in the repository: `12mp` and `1mp` (every photo at that size,
quality 92, sensor noise and sharpening, camera EXIF, a mix of EXIF orientations) and
`phone-mix` (1.2-14.7 MP, mean 6.7 MP, quality 85-92, like the issue's 12 phone and camera
photos).

Stages, as the worker runs them: fetch (ImageFetcher on file://, from the page cache), decode
(detector.images.decode_image), hash (worker.cache_match.fingerprint: sha256 of the bytes and of
the pixels, pHash probes, signature), preprocess (detector.preprocess.to_tensor for each
distinct expert input). Each stage is timed in CPU time of the calling thread
(time.thread_time), best of --repeat passes per image, so that other processes sharing the
machine inflate the figures little; the wall time of the whole single-thread pass is reported
beside it. The old path is today's decode_image without min_side.

Then the cost model: over every photo on the worker's path (starter) and a 12 MP file saved
with more or less noise (bytes_sweep), ms = fixed + per MB + per MP by least squares; per MB is
the entropy decoding no draft skips, and the largest file within --budget-ms follows from it.

Then the parallelism check, worker's path, starter preset: the same images through 1 thread,
N threads (the worker's fetch pool) and N processes, images/s of wall time and the cores their
tasks kept busy. Threads that match the processes mean the work is not held back by the GIL;
N threads against 1 is the scaling, when the machine has N cores free.
Writes bench/results/preinference.json.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from bench.photos import CACHE, cached_phone_files, cached_phone_mix  # noqa: E402
from detector import presets  # noqa: E402
from detector.images import JPEG_DRAFT_SHARE, decode_image  # noqa: E402
from detector.preprocess import DECODE_MARGIN, decode_side, to_tensor  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.cache_match import fingerprint  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "real"
STAGES = ("fetch", "decode", "hash", "preprocess")


def source_photos(count: int) -> list[Path]:
    """`count` real photos spread over the folder (sorted, every k-th): fixed between runs."""
    paths = sorted(p for p in REAL.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"no photos under {REAL}")
    return paths[:: max(1, len(paths) // count)][:count]


def one_image(fetcher: ImageFetcher, uri: str, specs, min_side: int | None,
              jpeg_share: float = JPEG_DRAFT_SHARE) -> dict[str, float]:
    """Seconds of this thread's CPU per stage, for one image."""
    clock = time.thread_time
    t0 = clock()
    data = fetcher.fetch(uri)
    t1 = clock()
    img = decode_image(data, min_side=min_side, jpeg_draft_share=jpeg_share)
    t2 = clock()
    fingerprint(data, img)  # the worker's hash stage: sha256s of bytes and pixels, pHash, signature
    t3 = clock()
    for spec in specs:
        to_tensor(img, spec)
    t4 = clock()
    return dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def single_core(paths: list[Path], specs, min_side: int | None, repeat: int,
                jpeg_share: float = JPEG_DRAFT_SHARE) -> dict:
    fetcher = ImageFetcher(FetchConfig(file_roots=(str(CACHE),)))
    best = []
    wall = time.perf_counter()
    for path in paths:
        runs = [one_image(fetcher, path.as_uri(), specs, min_side, jpeg_share)
                for _ in range(repeat)]
        best.append({s: min(r[s] for r in runs) for s in STAGES})
    wall = (time.perf_counter() - wall) / (len(paths) * repeat)
    ms = {s: 1000 * float(np.mean([b[s] for b in best])) for s in STAGES}
    total = sum(ms.values())
    return {"ms_per_image": {k: round(v, 2) for k, v in ms.items()}, "ms_total": round(total, 2),
            "images_per_s_per_core": round(1000 / total, 1),
            "wall_ms_per_image": round(1000 * wall, 2),
            "ms_per_photo": [round(1000 * sum(b.values()), 1) for b in best],
            "decode_ms_per_photo": [round(1000 * b["decode"], 1) for b in best]}


_worker_state: dict = {}


def _init_worker(specs, min_side) -> None:
    _worker_state.update(fetcher=ImageFetcher(FetchConfig(file_roots=(str(CACHE),))),
                         specs=specs, min_side=min_side)


def _task(uri: str) -> float:
    """One image's pool work; returns the CPU seconds it took (this thread's)."""
    s = _worker_state
    return sum(one_image(s["fetcher"], uri, s["specs"], s["min_side"]).values())


def parallel(paths: list[Path], specs, min_side: int, workers: int, rounds: int) -> dict:
    """images/s of wall time through one thread, `workers` threads and `workers` processes, and
    how many cores their tasks kept busy (CPU seconds of the tasks / wall seconds)."""
    uris = [p.as_uri() for p in paths] * rounds
    out = {}
    _init_worker(specs, min_side)
    for name, pool in (("1 thread", ThreadPoolExecutor(1)),
                       ("threads", ThreadPoolExecutor(workers)),
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
    out["threads_vs_1_thread"] = round(out["threads"]["images_per_s"]
                                       / out["1 thread"]["images_per_s"], 2)
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
        rows.append({"noise": noise, "mb": round(path.stat().st_size / 1e6, 3), "megapixels": 12.0,
                     "decode_ms": round(1000 * min(r["decode"] for r in runs), 2),
                     "total_ms": round(1000 * min(sum(r.values()) for r in runs), 2)})
    return rows


def photo_info(paths: list[Path]) -> dict:
    from PIL import Image

    megapixels = [w * h / 1e6 for w, h in (Image.open(p).size for p in paths)]
    mb = [p.stat().st_size / 1e6 for p in paths]
    return {"count": len(paths), "megapixels_mean": round(float(np.mean(megapixels)), 2),
            "mb_mean": round(float(np.mean(mb)), 2),
            "megapixels": [round(m, 2) for m in megapixels], "mb": [round(m, 3) for m in mb]}


def cost_model(points: list[tuple[float, float, float, float]], budget_ms: float) -> dict:
    """Least squares over (MB, MP, decode ms, total ms) of every photo measured on the worker's
    path: ms = fixed + per_mb x MB + per_mp x MP. per_mb is the entropy decoding (the floor no
    draft removes); per_mp what still scales with pixels (parsing, the 1/8 IDCT, reduction).
    Then the largest file that keeps the total within `budget_ms`, at a few pixel counts."""
    mb, mp, decode, total = (np.array(c) for c in zip(*points))
    design = np.column_stack([np.ones_like(mb), mb, mp])
    out = {}
    for name, ms in (("decode", decode), ("total", total)):
        coef, *_ = np.linalg.lstsq(design, ms, rcond=None)
        resid = ms - design @ coef
        out[name] = {"ms_fixed": round(float(coef[0]), 2), "ms_per_mb": round(float(coef[1]), 2),
                     "ms_per_mp": round(float(coef[2]), 2),
                     "rms_error_ms": round(float(np.sqrt(np.mean(resid**2))), 2)}
    fit = out["total"]
    out[f"mb_within_{budget_ms:g}ms"] = {
        f"{m:g}mp": round((budget_ms - fit["ms_fixed"] - fit["ms_per_mp"] * m) / fit["ms_per_mb"], 2)
        for m in (1.0, 6.7, 12.0)}
    out["points"] = len(mb)
    return out


def photo_sets(names: str, sources: list[Path]) -> dict[str, list[Path]]:
    """`12mp`, `1mp` ...: every photo at that size (quality 92); `phone-mix`: bench.photos's mix."""
    return {name: (cached_phone_mix(sources, tag="preinference") if name == "phone-mix" else
                   cached_phone_files(sources, float(name.removesuffix("mp")), "JPEG",
                                      tag="preinference"))
            for name in names.split(",")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--sets", default="12mp,phone-mix,1mp")
    parser.add_argument("--presets", default="starter,paper")
    parser.add_argument("--margins", default=f"{DECODE_MARGIN:g},2",
                        help="decode margins of the new path (the first is the worker's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos, parallel")
    parser.add_argument("--budget-ms", type=float, default=25.0)
    args = parser.parse_args(argv)
    sources = source_photos(args.photos)
    margins = list(dict.fromkeys(float(m) for m in args.margins.split(",")))
    result = {"photos": {}, "single_core": {}, "parallel": {}}
    starter = list(dict.fromkeys(e.preprocess for e in presets.starter().experts))
    points = []  # (MB, MP, decode ms, total ms) per photo, starter on the worker's path
    for key, paths in photo_sets(args.sets, sources).items():
        result["photos"][key] = info = photo_info(paths)
        print(f"{key}: {info['count']} photos, {info['megapixels_mean']} MP, "
              f"{info['mb_mean']} MB mean", flush=True)
        for preset in args.presets.split(","):
            specs = list(dict.fromkeys(e.preprocess for e in presets.PRESETS[preset]().experts))
            result["single_core"][f"{key}/{preset}"] = row = compare_paths(
                key, preset, paths, specs, margins, args.repeat)
            if preset == "starter":
                new = row[f"new@{margins[0]:g}"]
                points += zip(info["mb"], info["megapixels"], new["decode_ms_per_photo"],
                              new["ms_per_photo"])
        side = decode_side(starter, margins[0])
        result["parallel"][key] = par = {
            "fetch+decode+hash (the worker's pool today)": parallel(
                paths, [], side, args.workers, args.rounds),
            "fetch+decode+hash+preprocess": parallel(paths, starter, side, args.workers,
                                                     args.rounds)}
        for what, prow in par.items():
            print(f"{key:>9} starter, {args.workers} workers, {what}: {prow}", flush=True)
    result["bytes_sweep_12mp_starter"] = sweep = bytes_sweep(
        sources[0], starter, decode_side(starter, margins[0]), args.repeat)
    print("12 MP, worker's path, by file size:", sweep)
    points += [(r["mb"], r["megapixels"], r["decode_ms"], r["total_ms"]) for r in sweep]
    result["cost_model_starter"] = model = cost_model(points, args.budget_ms)
    print("cost model (starter, worker's path):", model)
    print(f"wrote {write_json('preinference', result)}")
    return 0


def compare_paths(key: str, preset: str, paths: list[Path], specs, margins: list[float],
                  repeat: int) -> dict:
    """The old path (full decode) and the new one at each margin, one core."""
    row = {"old": single_core(paths, specs, None, repeat)}
    print(f"{key:>9} {preset:<8} old: {row['old']['ms_per_image']} "
          f"= {row['old']['ms_total']} ms", flush=True)
    for margin in margins:
        side = decode_side(specs, margin)
        row[f"new@{margin:g}"] = new = {"decode_side": side,
                                        **single_core(paths, specs, side, repeat)}
        new["speedup"] = round(row["old"]["ms_total"] / new["ms_total"], 2)
        print(f"{key:>9} {preset:<8} new, margin {margin:g} (side {side}): "
              f"{new['ms_per_image']} = {new['ms_total']} ms "
              f"({new['images_per_s_per_core']} img/s/core)", flush=True)
    side = decode_side(specs, margins[0])  # the worker's margin, JPEGs drafted to 2/3 of it
    row[f"new@{margins[0]:g}/jpeg0.667"] = alt = {
        "decode_side": side, **single_core(paths, specs, side, repeat, 2 / 3)}
    alt["speedup"] = round(row["old"]["ms_total"] / alt["ms_total"], 2)
    alt["vs_worker"] = round(row[f"new@{margins[0]:g}"]["ms_total"] / alt["ms_total"], 2)
    print(f"{key:>9} {preset:<8} margin {margins[0]:g}, JPEGs drafted to "
          f"{math.ceil(side * 2 / 3)}: {alt['ms_per_image']} = {alt['ms_total']} ms", flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())
