"""The worker's loop: poll -> fetch/decode/hash/preprocess -> cache -> batch misses -> publish ->
cache -> commit. It sees only the ports (worker.ports): the model as a Judge, Kafka, Redis and
fetching as a source, sink, cache and fetcher, so the same code runs against the fakes of
worker.testing and against the adapters of worker.adapters, which worker.main builds. Each
message is a Job (worker.job).

The stages overlap. Fetching runs in a pool (worker.fetch_stage) and each step collects what has
finished, so a slow URL delays only its own message: the batch deadline holds and the consumer
polls at least every `poll_timeout_s`, well inside Kafka's max.poll.interval. What is let in is
bounded: at most `max_in_flight` messages and `max_in_flight_bytes` of model inputs (each image
is preprocessed in the fetch pool and its decoded pixels dropped there); at the bound the source
is paused (polling goes on, so the group keeps us) until work drains.

Delivery is at-least-once: an offset is committed only after every message below it has had its
verdict or dead letter acknowledged by the broker. A crash before the commit replays those
messages; the cache turns most replays into cheap hits. Only expected failures (fetch, decode,
policy, a malformed message, a failed batch) become dead letters; anything else is a bug and
stops the worker with nothing committed past it.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import structlog

from detector.batcher import BatchPolicy, Done, MicroBatcher
from detector.images import ImageDecodeError, ImageLimits, decode_image
from detector.service import label_for
from worker.cache_match import CacheLookup, CachedVerdict, fingerprint
from worker.fetch_stage import FetchStage
from worker.headers import HeaderPolicy, carry
from worker.job import Job, JobFailed
from worker.messages import DeadLetter, MessageError, Verdict, now, original_of, parse_reference
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.ports import (
    FetchError, Fetcher, Judge, Outgoing, Record, ReferenceSource, TopicPartition, VerdictCache,
    VerdictSink,
)
from worker.readiness import Readiness, ReadinessPolicy

log = structlog.get_logger("featdistill.pipeline")


@dataclass(frozen=True)
class PipelineConfig:
    input_topic: str
    verdict_topic: str
    dead_letter_topic: str
    worker_id: str
    batch: BatchPolicy = BatchPolicy()
    poll_timeout_s: float = 0.5
    poll_max_records: int = 256
    fetch_threads: int = 8
    uncertain_spread: float | None = None  # label "uncertain" when experts disagree by more
    image_limits: ImageLimits = ImageLimits()
    cache_prefix: str = "featdistill"
    lag_every_s: float = 5.0
    max_in_flight: int = 512  # messages polled and not yet published
    max_in_flight_bytes: int = 2 << 30  # model inputs held between preprocessing and inference
    readiness: ReadinessPolicy = ReadinessPolicy()
    headers: HeaderPolicy = HeaderPolicy()  # trace context and headers carried onto results


class Pipeline:
    def __init__(
        self, config: PipelineConfig, source: ReferenceSource, fetcher: Fetcher,
        cache: VerdictCache, sink: VerdictSink, judge: Judge, metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.source, self.fetcher, self.cache, self.sink = source, fetcher, cache, sink
        self.judge = judge
        self.metrics = metrics or Metrics()
        self.offsets = OffsetTracker()
        self.batcher: MicroBatcher[Job, Any] = MicroBatcher(self._infer, config.batch)
        self.fetching: FetchStage[Job, JobFailed | None] = FetchStage(self._fetch_one,
                                                                       config.fetch_threads)
        self.readiness = Readiness(config.readiness)
        self._fetched: collections.deque[Job] = collections.deque()  # decoded, not yet routed
        self._held_bytes = 0
        self._paused = False
        self._pending_by_pixels: dict[str, Job] = {}  # leaders being judged, by pixel digest
        self._outbox: list[tuple[Job, Outgoing]] = []
        self._fresh: dict[str, CachedVerdict] = {}  # judged, not yet written to the cache
        self._next_lag_at = 0.0
        self.lookup = CacheLookup(
            f"{config.cache_prefix}:{judge.version}:{judge.digest[:12]}", self.metrics)
        self._decode_side = judge.decode_side  # decode no bigger than the experts need

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> int:
        """One poll, and everything finished meanwhile. Returns the number of records polled.

        Blocks for at most `poll_timeout_s`, less when a batch falls due: in the poll when no
        fetch is running, else waiting for fetches (the poll then only takes what is there).
        """
        due = self.batcher.seconds_until_due()
        wait_s = self.config.poll_timeout_s if due is None else min(due, self.config.poll_timeout_s)
        # Never wait in the poll while fetched images are ready to route: each step routes a few
        # batches, so waiting here capped a backlog at 4 batches per poll timeout.
        records = self._poll(0.0 if len(self.fetching) or self._fetched else wait_s)
        for job in filter(None, map(self._start, records)):
            self.fetching.submit(job)
        self._collect(self.fetching.collect(wait_s if len(self.fetching) and not records else 0.0))
        self._route_some()
        self._finish_batches(self.batcher.poll())
        self._complete()
        self._report_lag()
        return len(records)

    def drain(self, fetch_timeout_s: float | None = None, judge_s: float | None = None) -> None:
        """Finish what is in flight, within limits, publishing and committing as it goes.

        Fetches still running after `fetch_timeout_s`, and fetched images not yet judged after
        `judge_s` more, are abandoned: uncommitted, so the partitions' next owner redoes them
        (None: no limit). The partial batch is then judged, published and committed.
        """
        self._collect(self.fetching.wait_all(fetch_timeout_s))
        abandoned = len(self.fetching.abandon(lambda job: True))
        until = None if judge_s is None else time.monotonic() + judge_s
        while self._fetched and (until is None or time.monotonic() < until):
            self._route_some()
            self._complete()
        abandoned += len(self._fetched)
        while self._fetched:
            self._release(self._fetched.popleft())
        if abandoned:
            log.info("drain_abandoned", messages=abandoned, note="uncommitted, replayed later")
        self._finish_batches(self.batcher.flush())
        self._complete()

    def on_revoke(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions are being taken away (maybe to be handed straight back): abandon their
        unfinished work and return, per partition, the offset to read again from.

        Nothing of theirs was committed past what was published, so another owner redoes exactly
        the unfinished messages (at-least-once); if the partition comes back to us, the source
        seeks to the returned offset, since the consumer keeps its read position for partitions
        it retains. This runs on the consumer's network thread, where Kafka calls must not block:
        no publish and no commit here.
        """
        log.info("partitions_revoked", partitions=sorted(partitions))
        resume = self.offsets.resume_points(partitions)
        lost = lambda job: job.tp in partitions  # noqa: E731
        self.fetching.abandon(lost)  # their results, when they come, are not looked at
        for job in [j for j in self._fetched if lost(j)]:
            self._fetched.remove(job)
            self._release(job)
        for leader in self.batcher.discard(lambda job: not lost(job)):
            self._pending_by_pixels.pop(leader.pixels, None)
            self._release(leader)
            kept = [f for f in leader.followers if not lost(f)]
            if kept:  # an identical image from a partition we keep still needs its verdict
                heir, heir.followers = kept[0], kept[1:]
                self._pending_by_pixels[heir.pixels] = heir
                self._finish_batches(self.batcher.submit(heir))
        for leader in self._pending_by_pixels.values():
            leader.followers = [f for f in leader.followers if not lost(f)]
        self._outbox = [(job, msg) for job, msg in self._outbox if not lost(job)]
        self.offsets.forget(partitions)
        return resume

    def close(self) -> None:
        self.fetching.close()

    # -- stages ------------------------------------------------------------------------------
    def _start(self, record: Record) -> Job | None:
        job = Job(record, carried=carry(record.headers, self.config.headers))
        self.offsets.started(job.tp, record.offset)
        try:
            job.ref = parse_reference(record.value)
        except MessageError as exc:
            self._dead_letter(job, exc.kind, str(exc))
            return None
        return job

    def _poll(self, timeout_s: float):
        """Poll for as many records as the in-flight bounds admit; at the bound, pause the
        source and poll anyway (for nothing), which keeps our place in the group."""
        room = self.config.max_in_flight - self.offsets.in_flight()
        full = room <= 0 or self._held_bytes >= self.config.max_in_flight_bytes
        if full != self._paused:
            self.source.pause() if full else self.source.resume()
            self._paused = full
            log.info("intake_paused" if full else "intake_resumed",
                     in_flight=self.offsets.in_flight(), held_bytes=self._held_bytes)
        self.metrics.in_flight.set(self.offsets.in_flight())
        self.metrics.held_bytes.set(self._held_bytes)
        return self.source.poll(timeout_s, max(1, min(room, self.config.poll_max_records)))

    def _collect(self, finished: list[tuple[Job, "JobFailed | None"]]) -> None:
        for job, error in finished:
            if error is None:
                self._held_bytes += job.pixel_bytes
                self._fetched.append(job)
            else:
                self._dead_letter(job, error.kind, str(error), error.attempts)

    def _route_some(self) -> None:
        """Route a few batches' worth of fetched images per step, so that one step never runs
        more than a few batches of inference before polling (and seeing a stop) again."""
        take = min(len(self._fetched), 4 * self.config.batch.max_batch)
        self._route([self._fetched.popleft() for _ in range(take)])

    @property
    def fetch_backlog(self) -> int:
        """Messages being fetched, or fetched and not yet routed to the cache and batcher."""
        return len(self.fetching) + len(self._fetched)

    @property
    def held_bytes(self) -> int:
        """Bytes of model inputs held now, between preprocessing and inference."""
        return self._held_bytes

    def _release(self, job: Job) -> None:
        """Drop a job's model inputs (its verdict is all we keep) and give their bytes back."""
        if job.inputs is not None:
            job.inputs = None
            self._held_bytes -= job.pixel_bytes

    def _fetch_one(self, job: Job) -> JobFailed | None:
        """Runs in the fetch pool: fetch, decode, hash and preprocess one image (each releases
        the GIL for most of its time). The decoded image is dropped here: the job keeps only the
        model's inputs, so the loop's thread batches and runs the forward, nothing per image."""
        timer = self.metrics.stage_seconds
        t0 = time.perf_counter()
        try:
            data = self.fetcher.fetch(job.ref.uri)
        except FetchError as exc:  # this message's failure; any other exception is ours
            return JobFailed(f"fetch_{exc.kind}", str(exc), exc.attempts)
        t1 = time.perf_counter()
        try:
            image = decode_image(data, self.config.image_limits, self._decode_side)
        except ImageDecodeError as exc:
            return JobFailed(f"decode_{exc.kind}", str(exc))
        t2 = time.perf_counter()
        job.fingerprint = fingerprint(data, image)
        job.cache_key = self.lookup.key(job.fingerprint)
        t3 = time.perf_counter()
        job.inputs = self.judge.prepare(image)
        job.pixel_bytes = sum(int(v.nbytes) for v in job.inputs.values())
        timer.labels("fetch").observe(t1 - t0)
        timer.labels("decode").observe(t2 - t1)
        timer.labels("hash").observe(t3 - t2)
        timer.labels("preprocess").observe(time.perf_counter() - t3)
        return None

    def _route(self, jobs: list[Job]) -> None:
        """Verified cache hits finish now; misses join the batch, or ride along with an image of
        the same pixels already being judged (an in-flight duplicate, not a cache hit)."""
        if not jobs:
            return
        t0 = time.perf_counter()
        keys = sorted({k for j in jobs for k in self.lookup.keys(j.fingerprint)})
        # Every probe of the poll in one round trip; an invalid entry is a counted miss.
        stored = self.lookup.decode(self.cache.get_many(keys))
        self.metrics.stage_seconds.labels("cache").observe(time.perf_counter() - t0)
        for job in jobs:
            found = self.lookup.find(job.fingerprint, self._candidates(job, stored))
            if found is not None:
                kind, entry = found
                self.metrics.cache_hits.labels(kind).inc()
                self._verdict(job, entry.result(), cache=kind)
                continue
            self.metrics.cache_misses.inc()
            leader = self._pending_by_pixels.get(job.pixels)
            if leader is not None:
                self.metrics.inflight_duplicates.inc()
                leader.followers.append(job)
            else:
                self._pending_by_pixels[job.pixels] = job
                self._finish_batches(self.batcher.submit(job))

    def _candidates(self, job: Job, stored: dict[str, CachedVerdict]) -> list[CachedVerdict]:
        """Entries under the image's probe keys, its own key first; judged-but-unwritten first."""
        found = (self._fresh.get(k) or stored.get(k) for k in self.lookup.keys(job.fingerprint))
        return [e for e in found if e is not None]

    def _infer(self, jobs: list[Job]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        scores = self.judge.predict_prepared([j.inputs for j in jobs])
        self.metrics.stage_seconds.labels("inference").observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(jobs))
        return [{"score": s.score, "experts": s.experts, "spread": s.spread} for s in scores]

    def _finish_batches(self, done: list[Done[Job, Any]]) -> None:
        for d in done:
            job = d.item
            self._pending_by_pixels.pop(job.pixels, None)
            if d.error is not None:
                log.error("inference_failed", id=job.ref.id, error=repr(d.error),
                          **job.carried.log_fields)
                for j in [job, *job.followers]:
                    self._dead_letter(j, "inference_error", repr(d.error))
                continue
            self._fresh[job.cache_key] = self.lookup.entry(job.fingerprint, d.result)
            self._verdict(job, d.result)
            for follower in job.followers:
                self._verdict(follower, d.result, duplicate_of=job.ref.id)

    def _complete(self) -> None:
        """Publish (and wait for acks), then write the cache, then commit what is safe."""
        if self._outbox:
            t0 = time.perf_counter()
            self.readiness.publishing(True)
            self.sink.publish([msg for _, msg in self._outbox])
            self.readiness.publishing(False)
            self.metrics.stage_seconds.labels("publish").observe(time.perf_counter() - t0)
            for job, _ in self._outbox:
                self.offsets.finished(job.tp, job.record.offset)
                self.metrics.end_to_end.observe(time.monotonic() - job.started)
            self._outbox = []
        if self._fresh:
            self.cache.set_many({k: v.encode() for k, v in self._fresh.items()})
            self._fresh = {}
        offsets = self.offsets.committable()
        if offsets:
            t0 = time.perf_counter()
            committed = self.source.commit(offsets)  # False: dropped, the next owner replays
            self.readiness.committed(committed)
            if committed:
                self.offsets.mark_committed(offsets)
            self.metrics.stage_seconds.labels("commit").observe(time.perf_counter() - t0)

    # -- results -----------------------------------------------------------------------------
    def _verdict(self, job: Job, result: dict[str, Any], cache: str | None = None,
                 duplicate_of: str | None = None) -> None:
        label = label_for(result["score"], self.judge.threshold, result["spread"],
                          self.config.uncertain_spread)
        verdict = Verdict(
            id=job.ref.id, uri=job.ref.uri, score=result["score"], label=label,
            threshold=self.judge.threshold, experts=result["experts"],
            model_version=self.judge.version, phash=job.fingerprint.phash,
            sha256=job.fingerprint.sha256, cached=cache is not None, cache=cache,
            duplicate_of=duplicate_of, latency_ms=round((time.monotonic() - job.started) * 1000, 3),
            worker_id=self.config.worker_id, timestamp=now(),
        )
        self.metrics.messages.labels("verdict").inc()
        self.metrics.verdicts.labels(label).inc()
        log.debug("verdict", id=job.ref.id, label=label, score=round(result["score"], 4),
                  cache=cache, duplicate_of=duplicate_of, **job.carried.log_fields)
        self._send(job, self.config.verdict_topic, job.ref.id, verdict.model_dump_json())

    def _dead_letter(self, job: Job, kind: str, message: str, attempts: int = 1) -> None:
        r = job.record
        letter = DeadLetter(
            id=job.ref.id if job.ref else None, uri=job.ref.uri if job.ref else None,
            error_kind=kind, error=message, attempts=attempts,
            original=original_of(r.topic, r.partition, r.offset, r.key, r.value),
            worker_id=self.config.worker_id, timestamp=now(),
        )
        self.metrics.messages.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(kind).inc()
        log.warning("dead_letter", id=letter.id, kind=kind, error=message,
                    partition=r.partition, offset=r.offset, **job.carried.log_fields)
        key = letter.id or f"{r.topic}-{r.partition}-{r.offset}"
        self._send(job, self.config.dead_letter_topic, key, letter.model_dump_json())

    def _send(self, job: Job, topic: str, key: str, value: str) -> None:
        message = Outgoing(topic, key.encode(), value.encode(), job.carried.headers)
        self._outbox.append((job, message))
        self._release(job)
        self.readiness.result(dead_letter=topic == self.config.dead_letter_topic)

    def _report_lag(self) -> None:
        if time.monotonic() < self._next_lag_at:
            return
        self._next_lag_at = time.monotonic() + self.config.lag_every_s
        assigned = self.source.assignment()
        self.metrics.assigned.set(len(assigned))
        for (topic, partition), lag in self.source.lag().items():
            self.metrics.lag.labels(topic, str(partition)).set(lag)

    def ready(self) -> bool:
        return self.readiness.ready(bool(self.source.assignment()))
