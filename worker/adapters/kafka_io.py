"""Kafka adapters for the pipeline's ports, on kafka-python.

The consumer never auto-commits: the pipeline commits explicitly, and only offsets below which
every result is acknowledged. The producer waits for acks=all on every publish before returning,
so "published" means durable on the broker.

Faults are events, not crashes, for as long as a broker outage could plausibly last
(`KafkaConfig.outage_s`, 2 min by default): connecting at start-up and publishing retry with
jittered backoff until then; only past it does the error reach the caller (the process dies
loudly, the orchestrator restarts it, nothing was committed past the failure). A commit that
fails, because the group rebalanced under us or the coordinator is away, is dropped: the offsets
stay uncommitted, so whoever owns the partitions next replays those messages (at-least-once),
and the consumer rejoins on its next poll.

A broker that answers but refuses us (credentials, certificates, TLS spoken to plaintext: see
worker/adapters/kafka_security.py) is no outage: connecting ends after its first attempt with KafkaRefused.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.adapters.kafka_probe import probe
from worker.adapters.kafka_security import KafkaSecurity, client_options, quiet_connect
from worker.ports import Outgoing, Record, RevokeCallback

log = structlog.get_logger("featdistill.kafka")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    group_id: str
    client_id: str
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    max_poll_interval_ms: int = 300_000
    publish_timeout_s: float = 30.0  # one attempt at publishing a batch
    outage_s: float = 120.0  # how long a broker outage is waited out before giving up
    commit_timeout_s: float = 10.0
    security: KafkaSecurity = KafkaSecurity()
    # One attempt at reaching the bootstrap servers when a client is built (kafka-python's own
    # default is 30 s); the outage loop retries it. A refusal is not retried (kafka_probe).
    bootstrap_timeout_s: float = 10.0
    # The longest wait between attempts to reach a broker that went away. kafka-python doubles
    # it from 50 ms up to its own default of 30 s: after a 30 s outage a worker slept up to 20 s
    # more with the broker back (the fault-injection bench), longer than the group's stall bar.
    reconnect_backoff_max_ms: int = 1_000


T = TypeVar("T")


class KafkaOutage(RuntimeError):
    """The broker stayed unreachable for longer than `outage_s`."""


def retry_through_outage(what: str, attempt: Callable[[], T], outage_s: float,
                         sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt()` until it succeeds, backing off 0.5 s doubling to 10 s with jitter, for at most
    `outage_s`; then KafkaOutage. Only KafkaError is retried: anything else is a bug."""
    deadline = time.monotonic() + outage_s
    delay, tries = 0.5, 0
    while True:
        tries += 1
        try:
            return attempt()
        except KafkaError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaOutage(f"{what}: Kafka unreachable for {outage_s:.0f} s "
                                  f"({tries} attempts): {exc}") from exc
            wait = min(left, delay * random.uniform(0.5, 1.0))
            log.warning("kafka_retry", what=what, attempt=tries, retry_in_s=round(wait, 2),
                        error=f"{type(exc).__name__}: {exc}")
            sleep(wait)
            delay = min(delay * 2, 10.0)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Callable[[set], None], on_assign: Callable[[set], None]):
        self._on_revoke, self._on_assign = on_revoke, on_assign

    def on_partitions_revoked(self, revoked):
        self._on_revoke({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned):
        self._on_assign({(tp.topic, tp.partition) for tp in assigned})


class KafkaReferenceSource:
    """A consumer in the worker group, subscribed to the input topic."""

    def __init__(self, consumer: KafkaConsumer, topic: str, commit_timeout_s: float = 10.0,
                 outage_s: float = 120.0) -> None:
        self.consumer = consumer
        self.topic = topic
        self.commit_timeout_s = commit_timeout_s
        self.outage_s = outage_s
        self._poll_failing_since: float | None = None
        self._on_revoke: RevokeCallback = lambda partitions: {}
        self._rewind: dict[tuple[str, int], int] = {}

    @classmethod
    def connect(cls, config: KafkaConfig, topic: str) -> "KafkaReferenceSource":
        def make() -> KafkaConsumer:
            probe(config.bootstrap, config.security, config.bootstrap_timeout_s)  # refused: raises
            return KafkaConsumer(
                bootstrap_servers=config.bootstrap,
                group_id=config.group_id,
                client_id=config.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                bootstrap_timeout_ms=int(config.bootstrap_timeout_s * 1000),
                reconnect_backoff_max_ms=config.reconnect_backoff_max_ms,
                **client_options(config.security),
            )

        consumer = retry_through_outage("connect consumer", quiet_connect(make), config.outage_s)
        return cls(consumer, topic, config.commit_timeout_s, config.outage_s)

    def subscribe(self, on_revoke: RevokeCallback) -> None:
        self._on_revoke = on_revoke
        self.consumer.subscribe(
            [self.topic],
            listener=_Listener(self._revoked, self._assigned),
        )

    def _revoked(self, partitions: set) -> None:
        if partitions:
            self._rewind.update(self._on_revoke(partitions))

    def _assigned(self, partitions: set) -> None:
        # kafka-python keeps the read position of a partition that stays assigned across a
        # rebalance; work abandoned on revocation must be read again, so rewind to it.
        for (topic, partition), offset in self._rewind.items():
            if (topic, partition) in partitions:
                self.consumer.seek(TopicPartition(topic, partition), offset)
        self._rewind = {}
        log.info("partitions_assigned", partitions=sorted(partitions))

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """Records, or none while the broker is away: kafka-python 3.0's poll can raise a
        retriable error (KafkaConnectionError from its coordinator lookup) during an outage,
        which is waited out like any other for `outage_s`, then KafkaOutage."""
        try:
            batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            now = time.monotonic()
            self._poll_failing_since = self._poll_failing_since or now
            if now - self._poll_failing_since > self.outage_s:
                raise KafkaOutage(
                    f"poll: Kafka unreachable for {self.outage_s:.0f} s: {exc}") from exc
            log.warning("kafka_retry", what="poll", error=f"{type(exc).__name__}: {exc}")
            time.sleep(min(timeout_s, 0.5))  # the library retries inside; do not spin on it
            return []
        self._poll_failing_since = None
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
            for tp in sorted(batches, key=lambda t: (t.topic, t.partition))
            for m in batches[tp]
        ]

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        """Commit what we still own; False (logged) if the commit was dropped."""
        # Only partitions we still own: committing for a revoked one would fail the whole call.
        owned = self.assignment()
        mine = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in offsets.items() if (t, p) in owned}
        if not mine:
            return True
        try:
            self.consumer.commit(mine, timeout_ms=int(self.commit_timeout_s * 1000))
        except KafkaError as exc:
            # Lost membership (CommitFailedError, UnknownMemberId, IllegalGeneration, "not part
            # of an active group") or an absent coordinator. Nothing is lost: the offsets stay
            # uncommitted and are replayed by the partitions' next owner, or committed by us on
            # a later step if we keep them.
            log.warning("commit_dropped", partitions=sorted(offsets),
                        error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def pause(self) -> None:
        # Partitions assigned later (a rebalance) start unpaused; the pipeline pauses again on
        # its next step while it is still full.
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the high watermark, for the partitions whose position is known. A
        metric, read in the loop: it must neither block nor fail while the broker is away
        (position() looks committed offsets up when it does not know one)."""
        out = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            try:
                position = None if end is None else self.consumer.position(tp, timeout_ms=100)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                continue
            if position is not None:
                out[(tp.topic, tp.partition)] = max(0, end - position)
        return out

    def close(self) -> None:
        # autocommit=False: closing must not commit anything the pipeline did not decide on.
        self.consumer.close(autocommit=False)


class KafkaVerdictSink:
    @classmethod
    def connect(cls, config: KafkaConfig) -> "KafkaVerdictSink":
        def make() -> KafkaProducer:
            probe(config.bootstrap, config.security, config.bootstrap_timeout_s)  # refused: raises
            return KafkaProducer(
                bootstrap_servers=config.bootstrap,
                client_id=config.client_id,
                acks="all",
                linger_ms=5,
                retries=5,
                # send() blocks at most this long for metadata or buffer space, then raises a
                # KafkaTimeoutError that the outage loop retries.
                max_block_ms=int(config.publish_timeout_s * 1000),
                bootstrap_timeout_ms=int(config.bootstrap_timeout_s * 1000),
                reconnect_backoff_max_ms=config.reconnect_backoff_max_ms,
                **client_options(config.security),
            )

        producer = retry_through_outage("connect producer", quiet_connect(make), config.outage_s)
        return cls(producer, config.publish_timeout_s, config.outage_s)

    def __init__(self, producer: KafkaProducer, timeout_s: float = 30.0,
                 outage_s: float = 120.0) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.outage_s = outage_s

    def publish(self, messages: list[Outgoing]) -> None:
        """Send all and wait for every ack, retrying what was not acknowledged through an outage
        of up to `outage_s` (a retried message may land twice: at-least-once)."""
        left = list(messages)

        def attempt() -> None:
            nonlocal left
            futures = [(m, self.producer.send(m.topic, key=m.key, value=m.value,
                                              headers=list(m.headers) or None)) for m in left]
            self.producer.flush(timeout=self.timeout_s)
            failed, first = [], None
            for m, future in futures:
                try:
                    future.get(timeout=self.timeout_s)
                except KafkaError as exc:
                    failed.append(m)
                    first = first or exc
            left = failed
            if first is not None:
                raise first

        retry_through_outage("publish", attempt, self.outage_s)

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
