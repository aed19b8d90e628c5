"""The worker's Prometheus metrics (served by worker.health).

Each Metrics owns its registry (no module-level singletons), so tests and several workers in one
process do not collide.
"""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("featdistill_messages_total", "Messages handled, by outcome",
                                ["outcome"], registry=r)
        self.verdicts = Counter("featdistill_verdicts_total", "Verdicts published, by label",
                                ["label"], registry=r)
        self.cache_hits = Counter(
            "featdistill_cache_hits_total",
            "Verdicts reused from the cache, by kind: exact (same bytes or pixels), near (verified "
            "re-encode or resize)", ["kind"], registry=r)
        self.cache_misses = Counter(
            "featdistill_cache_misses_total",
            "Lookups the cache could not answer (in-flight duplicates included)", registry=r)
        self.cache_mismatches = Counter(
            "featdistill_cache_mismatches_total",
            "Lookups that found an entry under a probed pHash whose picture differs (a local edit, "
            "a pHash collision): judged afresh", registry=r)
        self.cache_invalid = Counter(
            "featdistill_cache_invalid_total",
            "Cache values that could not be used (not JSON, unversioned, other version, invalid)",
            ["reason"], registry=r)
        self.inflight_duplicates = Counter(
            "featdistill_inflight_duplicates_total",
            "Images identical to one being judged at the same time: share its judging", registry=r)
        self.cache_errors = Counter("featdistill_cache_errors_total",
                                    "Cache operations that failed (Redis unreachable)", registry=r)
        self.cache_up = Gauge("featdistill_cache_up", "1 while the verdict cache answers", registry=r)
        self.batch_size = Histogram("featdistill_batch_size", "Images per inference batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.stage_seconds = Histogram("featdistill_stage_seconds", "Time per stage",
                                       ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("featdistill_message_latency_seconds",
                                    "From poll to published result", buckets=_LATENCY_BUCKETS,
                                    registry=r)
        self.dead_letters = Counter("featdistill_dead_letters_total", "Dead letters, by error kind",
                                    ["kind"], registry=r)
        self.lag = Gauge("featdistill_consumer_lag", "Messages behind the log end, per partition",
                         ["topic", "partition"], registry=r)
        self.assigned = Gauge("featdistill_assigned_partitions", "Partitions owned", registry=r)
        self.in_flight = Gauge("featdistill_in_flight_messages",
                               "Messages polled and not yet published", registry=r)
        self.held_bytes = Gauge("featdistill_in_flight_pixel_bytes",
                                "Model inputs (preprocessed pixels) held before inference",
                                registry=r)
        self.cache_up.set(1)
        for kind in ("exact", "near"):
            self.cache_hits.labels(kind)  # exported at 0 from the start

    def value(self, name: str, **labels: str) -> float:
        """Read a sample back (tests, summaries)."""
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def render(self) -> bytes:
        return generate_latest(self.registry)
