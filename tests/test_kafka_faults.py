"""Kafka faults are events: dropped commits, outages waited out with backoff, then a clear error.

The adapters take their kafka-python client as an argument, so these drive them with stand-ins
that raise kafka-python's own errors; tests/test_worker_services.py and test_worker_faults.py run
the worker against the real broker. One test builds the worker's real clients: their reconnect
backoff, which decides how soon the group is back after a broker outage.
"""
from __future__ import annotations

import json
import logging

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError, UnknownMemberIdError

from worker.adapters import kafka_io
from worker.adapters.kafka_io import KafkaOutage, KafkaReferenceSource, KafkaVerdictSink, retry_through_outage
from worker.logs import configure_logging
from worker.ports import Outgoing
from worker.settings import load_settings


class Consumer:
    def __init__(self, error=None):
        self.error, self.commits = error, []

    def assignment(self):
        from kafka import TopicPartition
        return {TopicPartition("refs", 0)}

    def commit(self, offsets, timeout_ms=None):
        if self.error:
            raise self.error
        self.commits.append(offsets)


@pytest.mark.parametrize("error", [
    CommitFailedError("the group has already rebalanced"),
    UnknownMemberIdError(),
    KafkaTimeoutError("coordinator not available"),
])
def test_a_failed_commit_is_dropped_not_raised(error):
    source = KafkaReferenceSource(Consumer(error), "refs")
    assert source.commit({("refs", 0): 5}) is False
    ok = KafkaReferenceSource(Consumer(), "refs")
    assert ok.commit({("refs", 0): 5}) is True and len(ok.consumer.commits) == 1
    assert ok.commit({("refs", 1): 5}) is True and len(ok.consumer.commits) == 1  # not ours


def test_an_outage_is_waited_out_with_growing_backoff():
    calls, sleeps = [], []

    def attempt():
        calls.append(1)
        if len(calls) < 4:
            raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")
        return "connected"

    assert retry_through_outage("connect", attempt, 60, sleep=sleeps.append) == "connected"
    assert len(sleeps) == 3 and sleeps[0] <= 0.5 and sleeps[2] > sleeps[0] / 2


def test_past_the_budget_the_outage_is_one_clear_error(monkeypatch):
    clock = iter(range(0, 1000, 50))
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: next(clock))

    def attempt():
        raise KafkaTimeoutError("Unable to bootstrap")

    with pytest.raises(KafkaOutage, match="unreachable for 120 s"):
        retry_through_outage("connect consumer", attempt, 120, sleep=lambda s: None)


def test_only_kafka_errors_are_retried():
    def attempt():
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        retry_through_outage("publish", attempt, 60, sleep=lambda s: None)


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error


class Producer:
    """Fails the first send of message b'2' (a broker that went away), then accepts."""

    def __init__(self):
        self.sent, self.failed_once = [], False

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append(value)
        if value == b"2" and not self.failed_once:
            self.failed_once = True
            return Future(KafkaTimeoutError("Batch expired"))
        return Future()

    def flush(self, timeout=None):
        pass


def test_publish_resends_only_what_was_not_acknowledged(monkeypatch):
    monkeypatch.setattr(kafka_io.time, "sleep", lambda s: None)
    producer = Producer()
    sink = KafkaVerdictSink(producer, timeout_s=1, outage_s=60)
    sink.publish([Outgoing("t", b"k", str(i).encode()) for i in range(4)])
    assert producer.sent == [b"0", b"1", b"2", b"3", b"2"]


@pytest.fixture
def restore_logging():
    yield
    import structlog

    logging.getLogger().handlers[:] = []  # they write to this test's captured stderr
    structlog.reset_defaults()


def test_library_log_lines_are_json_with_the_worker_id(capsys, restore_logging):
    configure_logging("json", "info", worker_id="w-7")
    logging.getLogger("kafka.conn").warning("connect to %s failed", "127.0.0.1:1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "connect to 127.0.0.1:1 failed" and record["worker_id"] == "w-7"
    assert record["logger"] == "kafka.conn" and record["level"] == "warning"


def connection_manager(client):
    """kafka-python 3.0's connection manager of a consumer or a producer (private: the backoff
    it applies is what matters here, and it is only seen there)."""
    net = client._client if hasattr(client, "_client") else client._sender._client
    return net._manager


@pytest.mark.parametrize("setting, cap_ms",
                         [({}, 1000), ({"RECONNECT_BACKOFF_MAX_MS": "250"}, 250)])
def test_after_many_failed_connects_the_clients_retry_within_the_cap(setting, cap_ms):
    # kafka-python doubles the wait after each failed connect up to its own 30 s: after a 30 s
    # broker outage the fault-injection bench's workers slept up to 20 s more with the broker
    # back. The worker's clients wait at most the setting (jitter: +20 %).
    from services import require_services, unique

    bootstrap, _ = require_services()
    env = {"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_KAFKA_BOOTSTRAP": bootstrap,
           "FEATDISTILL_GROUP_ID": unique("backoff"),
           **{f"FEATDISTILL_KAFKA_{k}": v for k, v in setting.items()}}
    config = load_settings(env).configs().kafka
    source = KafkaReferenceSource.connect(config, unique("backoff"))
    sink = KafkaVerdictSink.connect(config)
    try:
        for client in (source.consumer, sink.producer):
            manager = connection_manager(client)
            for _ in range(20):  # 50 ms doubled 20 times would be 14 hours
                manager.update_backoff("broker")
            assert 0 < manager.connection_delay("broker") <= 1.2 * cap_ms / 1000
    finally:
        source.close()
        sink.close()
