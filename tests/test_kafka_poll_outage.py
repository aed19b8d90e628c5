"""A broker outage seen by poll, or by the lag metric, is waited out, not a crash.

kafka-python 3.0's KafkaConsumer.poll can raise KafkaConnectionError (a retriable error) while
the broker is down: its coordinator lookup treats the refused connection as stale metadata, then
lets the failed metadata refresh escape. bench/fault_injection.py's 15 s broker outage crashed
two of three workers that way (exit 1 with a traceback); these drive the adapter with a stand-in
consumer that raises the library's own errors.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from worker.adapters import kafka_io
from worker.adapters.kafka_io import KafkaOutage, KafkaReferenceSource


class Consumer:
    """poll raises `failures` errors first, then returns one record."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.error, self.polls = failures, error, 0

    def poll(self, timeout_ms=None, max_records=None):
        self.polls += 1
        if self.polls <= self.failures:
            raise self.error or KafkaConnectionError("111 ECONNREFUSED")
        message = SimpleNamespace(topic="refs", partition=0, offset=7, key=b"k", value=b"v",
                                  headers=[])
        return {TopicPartition("refs", 0): [message]}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(kafka_io.time, "sleep", lambda s: None)


def test_a_connection_error_from_poll_is_an_empty_poll_until_the_broker_is_back():
    source = KafkaReferenceSource(Consumer(failures=3), "refs", outage_s=60)
    assert [source.poll(0.5, 10) for _ in range(3)] == [[], [], []]
    records = source.poll(0.5, 10)
    assert [(r.partition, r.offset, r.value) for r in records] == [(0, 7, b"v")]


def test_an_outage_seen_by_poll_past_the_budget_is_one_clear_error(monkeypatch):
    clock = iter(range(0, 1000, 50))
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: next(clock))
    source = KafkaReferenceSource(Consumer(failures=100), "refs", outage_s=120)
    with pytest.raises(KafkaOutage, match="poll: Kafka unreachable for 120 s"):
        for _ in range(10):
            source.poll(0.5, 10)


def test_the_budget_starts_again_after_a_successful_poll(monkeypatch):
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: next(clock))
    consumer = Consumer(failures=2)
    source = KafkaReferenceSource(consumer, "refs", outage_s=120)
    assert source.poll(0.5, 10) == [] and source.poll(0.5, 10) == []
    assert source.poll(0.5, 10)  # back: the outage is over
    consumer.failures, consumer.polls = 2, 0
    assert source.poll(0.5, 10) == [] and source.poll(0.5, 10) == []  # a new outage, new budget


def test_errors_that_waiting_cannot_fix_still_stop_the_worker():
    source = KafkaReferenceSource(Consumer(1, TopicAuthorizationFailedError()), "refs")
    with pytest.raises(TopicAuthorizationFailedError):
        source.poll(0.5, 10)


class LagConsumer:
    """Two partitions assigned: one with a known position, one whose position lookup fails as
    it does while the broker is down (or is not known yet, just after a rebalance)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def assignment(self):
        return {TopicPartition("refs", 0), TopicPartition("refs", 1)}

    def highwater(self, tp):
        return 10

    def position(self, tp, timeout_ms=None):
        assert timeout_ms is not None  # a metric must not block the loop
        if tp.partition == 1:
            if self.error:
                raise self.error
            return None
        return 4


@pytest.mark.parametrize("error", [KafkaConnectionError("111 ECONNREFUSED"), None])
def test_lag_leaves_out_partitions_whose_position_is_unknown(error):
    # The same outage crashed two workers through the lag metric (consumer.position).
    source = KafkaReferenceSource(LagConsumer(error), "refs")
    assert source.lag() == {("refs", 0): 6}


def test_lag_does_not_hide_errors_that_waiting_cannot_fix():
    source = KafkaReferenceSource(LagConsumer(TopicAuthorizationFailedError()), "refs")
    with pytest.raises(TopicAuthorizationFailedError):
        source.lag()
