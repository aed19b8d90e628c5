"""Peak memory while 1,000 references to 24 MP photos go through the worker's pipeline.

    python bench/memory_flat.py [--refs 1000] [--photos 16] [--megapixels 24]

The pipeline runs as the worker runs it (fetch pool, decode reduced to the detector's
decode_side, in-flight bounds, micro-batches) against in-memory Kafka and Redis stand-ins with
the cache down, so every reference is fetched, decoded and judged; the model is the tiny preset
(inference is not what is measured). The photos are phone-like 24 MP JPEGs made from the dev
set's real photos by bench/photos.py, cycled: every reference is fetched and decoded (two
references to one file in flight together are judged once). The process's resident set (VmRSS,
and VmHWM, its peak) is sampled as references complete; "flat" means the peak of the last
quarter is not above the peak of the first quarter by more than noise. --unbounded lifts the
in-flight bounds, to show what they buy.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import random_bundle, write_json  # noqa: E402
from bench.photos import cached_phone_files  # noqa: E402
from detector.batcher import BatchPolicy  # noqa: E402
from detector.service import Detector  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.logs import configure_logging  # noqa: E402
from worker.metrics import Metrics  # noqa: E402
from worker.pipeline import Pipeline, PipelineConfig  # noqa: E402
from worker.testing import MemoryCache, MemorySink, MemorySource  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "real"


def rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def run(args) -> dict:
    sources = sorted(p for p in REAL.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sources = sources[: args.photos]
    if not sources:
        sys.exit(f"memory_flat: no photos under {REAL}")
    files = cached_phone_files(sources, args.megapixels, "JPEG", tag="memory-flat")
    work = Path(tempfile.mkdtemp(prefix="fd-memflat-"))
    bundle = random_bundle(work / "bundle", "tiny", "memflat")
    detector = Detector.load(bundle)
    bounds = ({"max_in_flight": 100_000, "max_in_flight_bytes": 1 << 50} if args.unbounded
              else {"max_in_flight": args.max_in_flight,
                    "max_in_flight_bytes": args.max_in_flight_mb << 20})
    cfg = PipelineConfig("refs", "verdicts", "dead", "bench", batch=BatchPolicy(32, 0.05),
                         fetch_threads=8, poll_max_records=256, **bounds)
    source, sink, cache = MemorySource("refs"), MemorySink(), MemoryCache()
    cache.down = True  # every reference is judged
    for i in range(args.refs):
        uri = files[i % len(files)].as_uri()
        source.append(json.dumps({"id": f"r{i}", "uri": uri}).encode())
    fetcher = ImageFetcher(FetchConfig(file_roots=(str(files[0].parent),), max_bytes=64 << 20))
    metrics = Metrics()
    pipeline = Pipeline(cfg, source, fetcher, cache, sink, detector, metrics)
    samples, start = [], time.perf_counter()
    done = lambda: len(sink.messages)  # noqa: E731
    while done() < args.refs:
        pipeline.step()
        if not samples or done() - samples[-1]["done"] >= args.refs // 40:
            rss, hwm = rss_mb()
            samples.append({"done": done(), "rss_mb": round(rss), "peak_mb": round(hwm)})
    pipeline.drain()
    pipeline.close()
    seconds = time.perf_counter() - start
    quarter = [s for s in samples if s["done"] <= args.refs // 4]
    last = [s for s in samples if s["done"] >= 3 * args.refs // 4]
    first_peak = max(s["rss_mb"] for s in quarter)
    last_peak = max(s["rss_mb"] for s in last)
    dead = len(sink.on("dead"))
    return {"refs": args.refs, "photos": len(files), "megapixels": args.megapixels,
            "bounds": bounds, "seconds": round(seconds, 1), "dead_letters": dead,
            "rss_first_quarter_peak_mb": first_peak, "rss_last_quarter_peak_mb": last_peak,
            "ratio_last_to_first": round(last_peak / first_peak, 3),
            "process_peak_mb": max(s["peak_mb"] for s in samples), "samples": samples}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=int, default=1000)
    p.add_argument("--photos", type=int, default=16)
    p.add_argument("--megapixels", type=float, default=24)
    p.add_argument("--max-in-flight", type=int, default=512)
    p.add_argument("--max-in-flight-mb", type=int, default=2048)
    p.add_argument("--unbounded", action="store_true")
    args = p.parse_args(argv)
    configure_logging("console", "warning")
    result = run(args)
    for s in result["samples"][:: max(1, len(result["samples"]) // 10)]:
        print(f"  {s['done']:>5} done  rss {s['rss_mb']:>6} MB")
    print(f"{result['refs']} refs to {result['megapixels']:g} MP JPEGs in {result['seconds']} s, "
          f"dead letters {result['dead_letters']}: RSS peak first quarter "
          f"{result['rss_first_quarter_peak_mb']} MB, last quarter "
          f"{result['rss_last_quarter_peak_mb']} MB (ratio {result['ratio_last_to_first']}), "
          f"process peak {result['process_peak_mb']} MB")
    write_json("memory-flat" + ("-unbounded" if args.unbounded else ""), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
