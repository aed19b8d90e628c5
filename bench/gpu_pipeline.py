"""The worker's end-to-end images/s on a GPU node against the bare forward at the same batch, and
the CPU cores its pre-inference work needs per GPU. One run, one table, one JSON file.

    python bench/gpu_pipeline.py --photos .xfer/photos --presets starter,paper --batches 32,128
    python bench/gpu_pipeline.py --make-photos .xfer/photos --count 24   # a set to carry there

KAFKA AND REDIS ARE IN-MEMORY STAND-INS HERE (worker.testing's MemorySource, MemorySink and
MemoryCache, the fakes the contract tests hold to the real adapters' behaviour), so that a node
without either can run it and the figure is the worker's own work: fetch (the real ImageFetcher on
file:// roots, from the page cache), decode, hash, cache lookups and verification, batching,
preprocessing and inference (worker.pipeline.Pipeline and detector.service.Detector, unchanged),
verdict building. What the stand-ins leave out is the services' cost: the Kafka client's send
and commit and Redis's round trips. bench/worker_throughput.py runs the same measurement against
the real Kafka and Redis.

Measured, per preset and per batch B of --batches:
  1. bare forward: preprocessed tensors through the Detector's batched path at batch B (host to
     device copy and the per-expert results back included, as in bench/worker_throughput.py);
  2. the worker, cache cold, max_batch B: --images references of distinct pictures
     (bench/photo_variants.py: phone-size JPEGs, each a local edit the cache refuses), all waiting
     in the source when the clock starts, timed to the last publish and commit;
  3. the cache-hit path: the same pictures again under new ids, every one answered by the cache;
and per preset, one process on one thread: CPU milliseconds per image of fetch + decode + hash +
preprocess (bench/preinference.py's stages, the worker's reduced decode), so that
cores per GPU = bare images/s x ms / 1000.
The fetch pool has --fetch-threads threads (FEATDISTILL_FETCH_THREADS; default: every core here),
as the worker runs it: fetch, decode, hash and preprocessing (Detector.prepare) there; stacking,
normalising and inference on the loop's thread. Weights are random (speed does not depend on
them), made in memory on the device: the paper preset's 1.4 B parameters would be a 5.8 GB bundle
to write and read back.
Writes bench/results/gpu-pipeline.json (--out).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, Timer, machine  # noqa: E402
from bench.photo_variants import make_references, photos_in, phone_mix_photos, write_photo_set  # noqa: E402
from bench.preinference import STAGES, one_image  # noqa: E402
from detector import presets  # noqa: E402
from detector.batcher import BatchPolicy  # noqa: E402
from detector.expert import Expert  # noqa: E402
from detector.images import decode_image  # noqa: E402
from detector.preprocess import to_batch  # noqa: E402
from detector.service import Detector, resolve_device  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.logs import configure_logging  # noqa: E402
from worker.metrics import Metrics  # noqa: E402
from worker.pipeline import Pipeline, PipelineConfig  # noqa: E402
from worker.testing import MemoryCache, MemorySink, MemorySource  # noqa: E402

STAND_INS = ("Kafka and Redis are in-memory stand-ins (worker.testing): the figures are the "
             "worker's own work; bench/worker_throughput.py measures with the real services")


def random_detector(preset: str, device: str, dtype: str, batch: int) -> Detector:
    """Random weights of the preset's shape, made on the device (initialising 1.4 B parameters on
    a CPU takes minutes); experts declaring a shared trunk get the same trunk weights, as in
    bench.common.random_bundle, so the Detector shares it."""
    torch.manual_seed(0)
    spec = presets.PRESETS[preset]("bench-random")
    target = resolve_device(device)
    try:
        with torch.device(target):
            experts = [Expert.build(s) for s in spec.experts]
    except RuntimeError as exc:  # a backbone that cannot be built on the device: build on CPU
        print(f"{preset}: building on {target} failed ({exc}); building on the CPU", flush=True)
        experts = [Expert.build(s) for s in spec.experts]
    for e in experts[1:]:
        if e.spec.shared_blocks and e.spec.backbone == experts[0].spec.backbone:
            e.backbone.load_state_dict(experts[0].backbone.state_dict())
    digest = hashlib.sha256(f"bench-random-{preset}".encode()).hexdigest()
    return Detector(spec, experts, target, dtype, batch, digest)


def bare_forward(detector: Detector, tensors: dict, batch: int, batches: int) -> float:
    """images/s of `batches` batches of preprocessed tensors through Detector.probabilities_of,
    after two batches of warm-up (CUDA kernels, allocator)."""
    detector.batch_size = batch
    rows = len(next(iter(tensors.values())))
    tiled = lambda n: {s: t[torch.arange(n) % rows] for s, t in tensors.items()}  # noqa: E731
    detector.probabilities_of(tiled(2 * batch))
    timed = tiled(batch * batches)
    with Timer() as t:
        detector.probabilities_of(timed)  # returns on the CPU: the device has finished
    return batch * batches / t.seconds


def run_pipeline(detector: Detector, uris: list[str], batch: int, cache: MemoryCache,
                 options: argparse.Namespace, tag: str) -> dict:
    """The worker's Pipeline over stand-ins, every reference waiting in the source at the start;
    timed from the first poll to the last commit."""
    detector.batch_size = batch  # as worker.main loads it: batch_size = max_batch
    source, sink, metrics = MemorySource("refs"), MemorySink(), Metrics()
    for i, uri in enumerate(uris):
        source.append(json.dumps({"id": f"{tag}-{i}", "uri": uri}).encode(), key=str(i).encode())
    config = PipelineConfig("refs", "verdicts", "dead-letters", "bench-gpu",
                            batch=BatchPolicy(batch, options.max_wait_ms / 1000),
                            fetch_threads=options.fetch_threads,
                            max_in_flight=max(options.max_in_flight, 2 * batch))
    fetcher = ImageFetcher(FetchConfig(file_roots=(options.refs_root,)))
    pipeline = Pipeline(config, source, fetcher, cache, sink, detector, metrics)
    count = lambda outcome: metrics.value("featdistill_messages_total", outcome=outcome)  # noqa: E731
    cpu0, t0 = time.process_time(), time.perf_counter()
    while count("verdict") + count("dead_letter") < len(uris):
        pipeline.step()
    pipeline.drain()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pipeline.close()
    if count("dead_letter"):
        kinds = sorted({json.loads(m.value)["error_kind"] for m in sink.on("dead-letters")})
        raise SystemExit(f"{tag}: {count('dead_letter'):.0f} dead letters ({kinds})")
    judged = metrics.value("featdistill_batch_size_sum")
    batches = metrics.value("featdistill_batch_size_count")
    return {"images_per_s": round(len(uris) / wall, 1), "seconds": round(wall, 3),
            "judged": int(judged), "batches": int(batches),
            "mean_batch": round(judged / batches, 1) if batches else 0.0,
            "cache_hits": int(sum(metrics.value("featdistill_cache_hits_total", kind=k)
                                  for k in ("exact", "near"))),
            "inflight_duplicates": int(metrics.value("featdistill_inflight_duplicates_total")),
            # every thread of the process: the fetch pool's work plus the loop's, which includes
            # waiting on the device where the CUDA driver spins rather than sleeps
            "process_cpu_ms_per_image": round(1000 * cpu / len(uris), 2),
            "cores_busy": round(cpu / wall, 2),
            "loop_share_in_inference": round(metrics.value(
                "featdistill_stage_seconds_sum", stage="inference") / wall, 3)}


def preinference_cpu(detector: Detector, uris: list[str], root: str) -> dict:
    """CPU ms per image of fetch, decode, hash and preprocess, one process on one thread, on the
    worker's path (decode reduced to the detector's decode_side): bench/preinference.py's stages."""
    fetcher = ImageFetcher(FetchConfig(file_roots=(root,)))
    specs, side = detector.preprocess_specs, detector.decode_side
    one_image(fetcher, uris[0], specs, side)  # warm-up: first-call imports and tables
    runs = [one_image(fetcher, uri, specs, side) for uri in uris]
    ms = {s: round(1000 * sum(r[s] for r in runs) / len(runs), 2) for s in STAGES}
    return {"images": len(uris), "decode_side": side, "ms_per_image": ms,
            "ms_total": round(sum(ms.values()), 2)}


def measure_preset(preset: str, uris: list[str], options: argparse.Namespace) -> dict:
    batches = sorted(options.batch_sizes)
    with Timer() as built:
        detector = random_detector(preset, options.device, options.dtype, batches[-1])
    print(f"{preset}: built on {detector.device} in {built.seconds:.1f} s, "
          f"{detector.param_bytes() / 1e9:.2f} GB of parameters, autocast {detector.dtype}", flush=True)
    cpu = preinference_cpu(detector, uris[: options.cpu_sample], options.refs_root)
    print(f"{preset}: pre-inference, one core: {cpu['ms_per_image']} = {cpu['ms_total']} ms/image",
          flush=True)
    photos = [decode_image(path.read_bytes(), min_side=detector.decode_side)
              for path in options.photos_used]
    tensors = {spec: to_batch(photos, spec) for spec in detector.preprocess_specs}
    rows = {}
    for batch in batches:
        bare = bare_forward(detector, tensors, batch, options.bare_batches)
        run_pipeline(detector, uris[: 2 * batch], batch, MemoryCache(), options, "warm")
        cache = MemoryCache()
        cold = run_pipeline(detector, uris, batch, cache, options, "cold")
        hits = run_pipeline(detector, uris, batch, cache, options, "hit")
        rows[str(batch)] = row = {
            "bare_forward_images_per_s": round(bare, 1), "worker_cold": cold, "worker_hits": hits,
            "cold_over_bare": round(cold["images_per_s"] / bare, 3),
            "cores_per_gpu": round(bare * cpu["ms_total"] / 1000, 1)}
        print(f"{preset} batch {batch}: bare {bare:.1f}, worker cold {cold['images_per_s']} "
              f"(judged {cold['judged']}/{len(uris)}, mean batch {cold['mean_batch']}), "
              f"hits {hits['images_per_s']} images/s; cold/bare {row['cold_over_bare']}", flush=True)
        if cold["judged"] != len(uris):
            print(f"WARNING {preset} batch {batch}: {len(uris) - cold['judged']} references of the "
                  "cold pass were not judged (cache hits or in-flight duplicates)", flush=True)
    result = {"device": str(detector.device), "dtype": str(detector.dtype).removeprefix("torch."),
              "param_bytes": detector.param_bytes(), "decode_side": detector.decode_side,
              "preinference_one_core": cpu, "by_batch": rows}
    del detector, tensors
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def node() -> dict:
    info = machine()
    info.update(cpu_count=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)),
                cuda_version=torch.version.cuda, platform=platform.platform(),
                cpu_model=_cpu_model())
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def print_table(result: dict) -> None:
    print(f"\n{STAND_INS}.")
    info = result["machine"]
    print(f"device {info['cuda'] or 'cpu'}, {info['cpus_usable']} CPUs ({info['cpu_model']}), "
          f"torch {info['torch']}, {result['images']} references of {result['photos']['count']} "
          f"photos ({result['photos']['megapixels_mean']} MP mean), fetch threads "
          f"{result['fetch_threads']}")
    head = (f"{'preset':<9}{'dtype':<10}{'batch':>6}{'bare img/s':>12}{'worker img/s':>14}"
            f"{'worker/bare':>13}{'hits img/s':>12}{'pre-inf ms':>12}{'cores/GPU':>11}")
    print(head)
    for preset, r in result["presets"].items():
        ms = r["preinference_one_core"]["ms_total"]
        for batch, row in r["by_batch"].items():
            print(f"{preset:<9}{r['dtype']:<10}{batch:>6}{row['bare_forward_images_per_s']:>12.1f}"
                  f"{row['worker_cold']['images_per_s']:>14.1f}{row['cold_over_bare']:>13.3f}"
                  f"{row['worker_hits']['images_per_s']:>12.1f}{ms:>12.2f}{row['cores_per_gpu']:>11.1f}")
    print("pre-inf ms: fetch + decode + hash + preprocess, CPU ms per image on one core; "
          "cores/GPU = bare img/s x pre-inf ms / 1000")


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, help="folder of phone-size JPEGs (default: the phone mix "
                   "made from the dev set's photos, which must then be here)")
    p.add_argument("--photo-count", type=int, default=24, help="photos used from the folder or made")
    p.add_argument("--make-photos", type=Path, metavar="DIR", help="write --count phone-mix "
                   "photos into DIR (to carry to a node without the dev set) and exit")
    p.add_argument("--count", type=int, default=24, help="with --make-photos")
    p.add_argument("--images", type=int, default=1024, help="references per pass")
    p.add_argument("--batches", default="32,128", help="batch sizes (max_batch), comma-separated")
    p.add_argument("--presets", default="starter,paper")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--fetch-threads", type=int, default=os.cpu_count() or 1,
                   help="the worker's fetch/decode/hash pool (FEATDISTILL_FETCH_THREADS)")
    p.add_argument("--max-in-flight", type=int, default=PipelineConfig.max_in_flight,
                   help="FEATDISTILL_MAX_IN_FLIGHT (raised to 2 batches if smaller)")
    p.add_argument("--max-wait-ms", type=float, default=50.0, help="FEATDISTILL_MAX_WAIT_MS")
    p.add_argument("--bare-batches", type=int, default=8, help="batches timed in the bare forward")
    p.add_argument("--cpu-sample", type=int, default=48, help="references timed on one core")
    p.add_argument("--variant-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=RESULTS / "gpu-pipeline.json")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging("console", "warning")
    if args.make_photos:
        paths = write_photo_set(args.make_photos, args.count)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"wrote {len(paths)} photos, {mb:.1f} MB, to {args.make_photos}")
        return 0
    photos = (photos_in(args.photos) if args.photos else phone_mix_photos(args.photo_count))
    photos = photos[: args.photo_count]
    args.photo_count = len(photos)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fd-gpu-pipeline-"))
    with Timer() as made:
        paths = make_references(photos, args.images, work / "refs", args.variant_workers)
    print(f"{args.images} references of {len(photos)} photos written in {made.seconds:.1f} s "
          f"({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB)", flush=True)
    uris = [p.resolve().as_uri() for p in paths]
    args.refs_root, args.photos_used = str((work / "refs").resolve()), photos
    result = {"stand_ins": STAND_INS, "machine": node(), "images": args.images,
              "photos": photo_summary(photos), "fetch_threads": args.fetch_threads,
              "max_in_flight": args.max_in_flight, "max_wait_ms": args.max_wait_ms,
              "presets": {}}
    try:
        for preset in args.presets.split(","):
            result["presets"][preset] = measure_preset(preset, uris, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # about 1 MB a reference
    result["seconds_total"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {args.out} ({result['seconds_total']} s in all)")
    return 0


def photo_summary(photos: list[Path]) -> dict:
    from PIL import Image

    megapixels = []
    for p in photos:
        with Image.open(p) as img:
            megapixels.append(img.width * img.height / 1e6)
    return {"count": len(photos), "megapixels_mean": round(sum(megapixels) / len(megapixels), 2),
            "mb_mean": round(sum(p.stat().st_size for p in photos) / len(photos) / 1e6, 3)}


if __name__ == "__main__":
    sys.exit(main())
