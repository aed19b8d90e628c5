"""Worker throughput against the real Kafka and Redis, as ratios measured in one run.

    bash deploy/local/services.sh start && eval "$(bash deploy/local/services.sh env)"
    python bench/worker_throughput.py --preset base --images 48 --batch 16

Measures, on the same images and bundle:
  1. the bare detector (preprocessed tensors through the four experts) at batch B;
  2. the worker end to end, cache cold (Kafka in, fetch, decode, hash, Redis, batch, publish
     with acks, commit) at max_batch B;
  3. the same, one message at a time (max_batch 1);
  4. the cache-hit path: every reference is an image already judged.
The pipeline runs in this process over the real adapters, so only its own work is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, make_images, random_bundle, write_json  # noqa: E402
from detector.batcher import BatchPolicy  # noqa: E402
from detector.images import decode_image  # noqa: E402
from detector.preprocess import to_batch  # noqa: E402
from detector.service import Detector  # noqa: E402
from worker.adapters.fetch import FetchConfig, ImageFetcher  # noqa: E402
from worker.adapters.kafka_io import KafkaConfig, KafkaReferenceSource, KafkaVerdictSink  # noqa: E402
from worker.adapters.kafka_security import client_options  # noqa: E402
from worker.adapters.redis_cache import RedisVerdictCache  # noqa: E402
from worker.logs import configure_logging  # noqa: E402
from worker.metrics import Metrics  # noqa: E402
from worker.pipeline import Pipeline, PipelineConfig  # noqa: E402
from worker.settings import SecuritySettings  # noqa: E402


def bare_forward(detector: Detector, images) -> float:
    """Preprocessed tensors through the Detector's batched path (its batch size and dtype; a
    shared trunk runs once), nothing else."""
    tensors = {spec: to_batch(images, spec) for spec in detector.preprocess_specs}
    with Timer() as t:
        detector.probabilities_of(tensors)
    return len(images) / t.seconds


def run_worker(detector, uris, batch: int, bootstrap: str, redis_url: str, cache_prefix: str,
               roots: tuple[str, ...], security: SecuritySettings) -> float:
    """Publish the references, then time the pipeline from first poll to last commit."""
    from kafka import KafkaProducer

    run = uuid.uuid4().hex[:8]
    topic = f"bench-refs-{run}"
    kafka = KafkaConfig(bootstrap, f"bench-{run}", f"bench-{run}", session_timeout_ms=6000,
                        heartbeat_interval_ms=1000, security=security.kafka_security())
    cfg = PipelineConfig(topic, f"bench-verdicts-{run}", f"bench-dead-{run}", "bench",
                         batch=BatchPolicy(batch, 0.05), cache_prefix=cache_prefix)
    metrics = Metrics()
    _create_topic(bootstrap, topic, kafka.security)
    source = KafkaReferenceSource.connect(kafka, topic)
    sink = KafkaVerdictSink.connect(kafka)
    cache = RedisVerdictCache.from_url(redis_url, 3600, metrics, security=security.redis_security())
    pipeline = Pipeline(cfg, source, ImageFetcher(FetchConfig(file_roots=roots)), cache, sink,
                        detector, metrics)
    source.subscribe(pipeline.on_revoke)
    while not source.assignment():  # join the group on the empty topic before the clock starts
        pipeline.step()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             **client_options(kafka.security))
    for i, uri in enumerate(uris):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"id": str(i), "uri": uri}).encode())
    producer.flush()
    producer.close()
    start = time.perf_counter()
    done = lambda: sum(metrics.value("featdistill_messages_total", outcome=o)  # noqa: E731
                       for o in ("verdict", "dead_letter"))
    while done() < len(uris):
        pipeline.step()
    pipeline.drain()
    seconds = time.perf_counter() - start
    assert metrics.value("featdistill_messages_total", outcome="dead_letter") == 0
    source.close()
    sink.close()
    pipeline.close()
    return len(uris) / seconds


def _create_topic(bootstrap: str, topic: str, security) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "starter", "paper"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="Detector autocast dtype")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    # No default ports: each checkout's services have their own (deploy/local/services.sh env).
    missing = [v for v in ("FEATDISTILL_KAFKA_BOOTSTRAP", "FEATDISTILL_REDIS_URL") if v not in os.environ]
    if missing:
        parser.error(f"{' and '.join(missing)} not set: bash deploy/local/services.sh start && "
                     'eval "$(bash deploy/local/services.sh env)"')
    bootstrap, redis_url = os.environ["FEATDISTILL_KAFKA_BOOTSTRAP"], os.environ["FEATDISTILL_REDIS_URL"]
    security = SecuritySettings()  # FEATDISTILL_KAFKA_*/REDIS_* security, as the worker reads them
    work = Path(tempfile.mkdtemp(prefix="fd-bench-"))
    paths = make_images(work / "images", args.images)
    uris = [p.as_uri() for p in paths]
    detector = Detector.load(random_bundle(work / "bundle", args.preset, "bench"),
                             batch_size=args.batch, dtype=args.dtype)
    images = [decode_image(p.read_bytes(), min_side=detector.decode_side) for p in paths]
    detector.predict(images[:2])  # warm-up
    roots = (str(work),)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rates = {
        "bare detector forward": bare_forward(detector, images),
        "worker, cache cold": run_worker(detector, uris, args.batch, bootstrap, redis_url,
                                         prefix, roots, security),
        "worker, cache hits only": run_worker(detector, uris, args.batch, bootstrap, redis_url,
                                              prefix, roots, security),
        "worker, one at a time": run_worker(detector, uris, 1, bootstrap, redis_url,
                                            prefix + "-b1", roots, security),
    }
    ratios = {
        "worker cold / bare forward": rates["worker, cache cold"] / rates["bare detector forward"],
        "micro-batched / one at a time": rates["worker, cache cold"] / rates["worker, one at a time"],
        "cache hits / cache cold": rates["worker, cache hits only"] / rates["worker, cache cold"],
    }
    print(f"worker throughput, preset {args.preset}, {args.images} images, batch {args.batch}, "
          f"dtype {args.dtype or 'default'}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:>10.1f} images/s")
    for name, ratio in ratios.items():
        print(f"{name:<32} {ratio:>8.2f}x")
    name = args.preset + (f"-{args.dtype}" if args.dtype else "")
    path = write_json(f"worker-{name}", {"preset": args.preset, "dtype": args.dtype, "images": args.images,
                                                "batch": args.batch, "images_per_s": rates,
                                                "ratios": ratios})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
