"""Kafka adapters for the pipeline's ports, on kafka-python.

The consumer never auto-commits: the pipeline commits explicitly, and only offsets below which
every result is acknowledged. The producer waits for acks=all on every publish before returning,
so "published" means durable on the broker, and a failure raises (the process dies loudly and the
orchestrator restarts it; nothing was committed past the failure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

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
    publish_timeout_s: float = 30.0


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Callable[[set], None], on_assign: Callable[[set], None]):
        self._on_revoke, self._on_assign = on_revoke, on_assign

    def on_partitions_revoked(self, revoked):
        self._on_revoke({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned):
        self._on_assign({(tp.topic, tp.partition) for tp in assigned})


class KafkaReferenceSource:
    """A consumer in the worker group, subscribed to the input topic."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self._on_revoke: RevokeCallback = lambda partitions: {}
        self._rewind: dict[tuple[str, int], int] = {}

    @classmethod
    def connect(cls, config: KafkaConfig, topic: str) -> "KafkaReferenceSource":
        consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap,
            group_id=config.group_id,
            client_id=config.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
        )
        return cls(consumer, topic)

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
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for tp in sorted(batches, key=lambda t: (t.topic, t.partition))
            for m in batches[tp]
        ]

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        # Only partitions we still own: committing for a revoked one would fail the whole call.
        owned = self.assignment()
        mine = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in offsets.items() if (t, p) in owned}
        if mine:
            self.consumer.commit(mine)

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def lag(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None:
                out[(tp.topic, tp.partition)] = max(0, end - self.consumer.position(tp))
        return out

    def close(self) -> None:
        # autocommit=False: closing must not commit anything the pipeline did not decide on.
        self.consumer.close(autocommit=False)


class KafkaVerdictSink:
    def __init__(self, producer: KafkaProducer, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, config: KafkaConfig) -> "KafkaVerdictSink":
        producer = KafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id=config.client_id,
            acks="all",
            linger_ms=5,
            retries=5,
        )
        return cls(producer, config.publish_timeout_s)

    def publish(self, messages: list[Outgoing]) -> None:
        futures = [self.producer.send(m.topic, key=m.key, value=m.value) for m in messages]
        self.producer.flush(timeout=self.timeout_s)
        for future in futures:
            future.get(timeout=self.timeout_s)  # raises the broker's error, if any

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
