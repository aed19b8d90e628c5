"""`featdistill replay`: re-judge historical uploads with a chosen bundle, through the worker's own
Pipeline (the same fetch, cache, batching, publish-then-commit code), from a finite source.

Sources: a Kafka topic by time range or offsets (end offsets fixed at start, so the job ends), or
a listing (file of URIs, CSV/JSONL manifest, folder, S3 prefix). Results go to a replay topic or
a JSONL file; never to the live verdict topic unless --allow-live-topic. A checkpoint file makes
an interrupted replay resume where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from shell.cli import CliError
from worker.adapters.fetch import ImageFetcher
from worker.adapters.redis_cache import RedisVerdictCache
from worker.adapters.replay_sources import (
    Checkpoint, JsonlSink, KafkaRangeSource, ListingSource, plan_topic_range, refs_from_listing,
    refs_from_s3,
)
from worker.logs import configure_logging
from worker.main import load_detector
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.ports import Outgoing
from worker.settings import SettingsError, load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-judge historical references with a bundle")
    p.add_argument("--bundle", required=True, type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-topic", help="Kafka topic of historical references")
    src.add_argument("--from-listing", help="file of URIs, CSV/JSONL manifest, folder, or s3://prefix")
    p.add_argument("--since", type=datetime.fromisoformat, help="ISO time (with --from-topic)")
    p.add_argument("--until", type=datetime.fromisoformat, help="ISO time (with --from-topic)")
    p.add_argument("--offsets", help="PARTITION:START-END,... (with --from-topic)")
    dst = p.add_mutually_exclusive_group(required=True)
    dst.add_argument("--to-topic", help="replay verdict topic (dead letters to TOPIC-dead)")
    dst.add_argument("--out", type=Path, help="JSONL file of verdicts (+ OUT.dead.jsonl)")
    p.add_argument("--allow-live-topic", action="store_true",
                   help="allow --to-topic to be the live verdict topic")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--refresh-cache", action="store_true",
                       help="ignore cached verdicts and overwrite them with this model's")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--previous", type=Path, help="JSONL verdicts of a previous model to compare labels")
    p.add_argument("--state", type=Path, help="checkpoint file (default: next to --out, or ./replay-<topic>.state.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


class NoCache:
    def get_many(self, keys):
        return {}

    def set_many(self, items):
        pass


class RefreshCache:
    """Reads nothing, writes everything: the new model's verdicts replace the old ones."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def get_many(self, keys):
        return {}

    def set_many(self, items):
        self.inner.set_many(items)


class RecordingSink:
    """Passes messages on and keeps the counts and labels the summary needs."""

    def __init__(self, inner, verdict_topic: str) -> None:
        self.inner, self.verdict_topic = inner, verdict_topic
        self.labels: dict[str, str] = {}
        self.cached = 0
        self.dead = 0

    def publish(self, messages: list[Outgoing]) -> None:
        self.inner.publish(messages)
        for m in messages:
            if m.topic == self.verdict_topic:
                v = json.loads(m.value)
                self.labels[v["id"]] = v["label"]
                self.cached += v["cached"]
            else:
                self.dead += 1


def _parse_offsets(text: str) -> dict[int, tuple[int, int]]:
    out = {}
    for part in text.split(","):
        p, _, rng = part.partition(":")
        start, _, end = rng.partition("-")
        out[int(p)] = (int(start), int(end))
    return out


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings({**os.environ, "FEATDISTILL_BUNDLE": str(args.bundle)})
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    cfg = settings.configs()
    configure_logging("console" if sys.stderr.isatty() else cfg.log_format, "warning")
    if args.to_topic == cfg.pipeline.verdict_topic and not args.allow_live_topic:
        raise CliError(f"{args.to_topic!r} is the live verdict topic; pass --allow-live-topic to "
                       "write replay verdicts there")
    detector = load_detector(cfg)  # cfg.bundle is args.bundle
    source = _source(args, cfg)
    verdict_topic = args.to_topic or "replay-verdicts"
    sink, close_sink = _sink(args, cfg, verdict_topic)
    recorder = RecordingSink(sink, verdict_topic)
    metrics = Metrics()
    cache = _cache(args, cfg, metrics)
    pipeline_cfg = replace(cfg.pipeline, verdict_topic=verdict_topic,
                           dead_letter_topic=f"{verdict_topic}-dead",
                           worker_id=f"replay-{uuid.uuid4().hex[:6]}", poll_timeout_s=0.2)
    pipeline = Pipeline(pipeline_cfg, source, ImageFetcher(cfg.fetch), cache, recorder, detector,
                        metrics)
    done_before = getattr(source, "completed_before_start", lambda: source.start)()
    bar = tqdm(total=source.total(), initial=done_before, unit="img", desc="replay",
               disable=args.no_progress, file=sys.stderr)
    try:
        handled = 0
        while not source.exhausted():
            pipeline.step()
            now = _handled(metrics)
            bar.update(now - handled)
            handled = now
        pipeline.drain()
        bar.update(_handled(metrics) - handled)
    finally:
        bar.close()
        pipeline.close()
        source.close()
        close_sink()
    _summary(recorder, detector.version, args.previous)
    return 0


def _handled(metrics: Metrics) -> int:
    return int(metrics.value("featdistill_messages_total", outcome="verdict")
               + metrics.value("featdistill_messages_total", outcome="dead_letter"))


def _state_path(args) -> Path:
    if args.state:
        return args.state
    if args.out:
        return args.out.with_name(args.out.name + ".state.json")
    return Path(f"replay-{args.from_topic or 'listing'}.state.json")


def _source(args, cfg):
    state = _state_path(args)
    if args.from_listing:
        listing = args.from_listing
        refs = refs_from_s3(listing) if listing.startswith("s3://") else refs_from_listing(Path(listing))
        return ListingSource(refs, Checkpoint.open(state, {"source": f"listing:{listing}"}))
    from kafka import KafkaConsumer

    from worker.adapters.kafka_security import client_options

    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap, group_id=None,
                             enable_auto_commit=False, client_id=f"replay-{uuid.uuid4().hex[:6]}",
                             **client_options(cfg.kafka.security))
    plan = {"source": f"topic:{args.from_topic}:{args.since}:{args.until}:{args.offsets}"}
    checkpoint = Checkpoint.open(state, plan)
    if "start" not in checkpoint.plan:  # first run: fix the range now, so the job terminates
        start, end = plan_topic_range(consumer, args.from_topic, args.since, args.until,
                                      _parse_offsets(args.offsets) if args.offsets else None)
        checkpoint.plan.update(start={str(p): o for p, o in start.items()},
                               end={str(p): o for p, o in end.items()})
    start = {int(p): o for p, o in checkpoint.plan["start"].items()}
    end = {int(p): o for p, o in checkpoint.plan["end"].items()}
    return KafkaRangeSource(consumer, args.from_topic, start, end, checkpoint)


def _sink(args, cfg, verdict_topic: str):
    if args.out:
        sink = JsonlSink(args.out, verdict_topic)
        return sink, sink.close
    from worker.adapters.kafka_io import KafkaVerdictSink

    sink = KafkaVerdictSink.connect(cfg.kafka)
    return sink, sink.close


def _cache(args, cfg, metrics):
    if args.no_cache:
        return NoCache()
    cache = RedisVerdictCache.from_url(cfg.redis_url, cfg.cache_ttl_s, metrics,
                                       security=cfg.redis_security)
    return RefreshCache(cache) if args.refresh_cache else cache


def _summary(recorder: RecordingSink, version: str, previous: Path | None) -> None:
    print(f"replay with {version}: judged {len(recorder.labels)} "
          f"(cached {recorder.cached}), dead letters {recorder.dead}")
    if previous is None:
        return
    old = {}
    for line in previous.read_text().splitlines():
        if line.strip():
            v = json.loads(line)
            old[v["id"]] = v["label"]
    common = [i for i in recorder.labels if i in old]
    changed = [i for i in common if old[i] != recorder.labels[i]]
    flips: dict[str, int] = {}
    for i in changed:
        key = f"{old[i]} -> {recorder.labels[i]}"
        flips[key] = flips.get(key, 0) + 1
    print(f"compared with {previous}: {len(common)} in common, {len(changed)} changed labels")
    for key, count in sorted(flips.items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {count}")
