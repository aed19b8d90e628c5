"""The ports' contracts: the same assertions against each in-memory fake (worker.testing) and
against the real adapter (worker.adapters; Kafka and Redis started by deploy/local/services.sh),
so the fakes the pipeline's unit tests run on behave like production.
"""
from __future__ import annotations

import inspect
import json
import time

import pytest

from detector.service import Detector
from worker.adapters.fetch import ImageFetcher
from worker.adapters.kafka_io import KafkaConfig, KafkaReferenceSource, KafkaVerdictSink
from worker.adapters.redis_cache import RedisVerdictCache
from worker.adapters.replay_sources import JsonlSink, KafkaRangeSource, ListingSource
from worker.metrics import Metrics
from worker.ports import Fetcher, Judge, Outgoing, ReferenceSource, VerdictCache, VerdictSink
from worker.testing import FakeJudge, MemoryCache, MemoryFetcher, MemorySink, MemorySource

from services import create_topic, produce, read_topic, require_services, unique


# -- every port's methods, on its fake and its adapters -------------------------------------------
def _methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(f) for name, f in vars(cls).items()
            if inspect.isfunction(f) and not name.startswith("_")}


@pytest.mark.parametrize("port, implementations", [
    (ReferenceSource, (MemorySource, KafkaReferenceSource, ListingSource, KafkaRangeSource)),
    (VerdictSink, (MemorySink, KafkaVerdictSink, JsonlSink)),
    (VerdictCache, (MemoryCache, RedisVerdictCache)),
    (Fetcher, (MemoryFetcher, ImageFetcher)),
    (Judge, (FakeJudge, Detector)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_fakes_and_adapters_take_what_their_port_passes(port, implementations):
    """Every method of the port, with its parameters in order; anything more has a default."""
    for cls in implementations:
        for name, wanted in _methods(port).items():
            assert name in dir(cls), f"{cls.__name__} has no {name}"
            given = list(inspect.signature(getattr(cls, name)).parameters.values())
            names = [p.name for p in wanted.parameters.values()]
            assert [p.name for p in given[:len(names)]] == names, (cls.__name__, name)
            assert all(p.default is not p.empty for p in given[len(names):]), (cls.__name__, name)


# -- VerdictCache ---------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def cache(request):
    if request.param == "memory":
        return MemoryCache()
    _, redis_url = require_services()
    return RedisVerdictCache.from_url(redis_url, 60, Metrics())


def test_cache_returns_what_was_set_and_nothing_else(cache):
    a, b, absent = unique("k"), unique("k"), unique("k")
    cache.set_many({a: b"one", b: b"\x00two"})
    assert cache.get_many([a, b, absent]) == {a: b"one", b: b"\x00two"}
    cache.set_many({a: b"three"})  # a later write replaces
    assert cache.get_many([a]) == {a: b"three"}
    assert cache.get_many([]) == {}


def test_an_unreachable_cache_is_all_misses_and_never_raises():
    down = MemoryCache()
    down.down = True
    # A port nothing listens on: the real adapter's outage.
    real = RedisVerdictCache.from_url("redis://127.0.0.1:9/0", 60, Metrics(), timeout_s=0.2)
    for cache in (down, real):
        cache.set_many({"k": b"v"})
        assert cache.get_many(["k"]) == {}


# -- ReferenceSource and VerdictSink ----------------------------------------------------------------
class KafkaPair:
    """A real topic, a consumer in a fresh group on it, and a producer of references."""

    def __init__(self) -> None:
        self.bootstrap, _ = require_services()
        self.topic, self.group = unique("contract"), unique("contract-group")
        create_topic(self.bootstrap, self.topic, 1)
        self.config = KafkaConfig(self.bootstrap, self.group, "contract",
                                  session_timeout_ms=6000, heartbeat_interval_ms=1000)
        self.source = self.connect()

    def connect(self) -> KafkaReferenceSource:
        source = KafkaReferenceSource.connect(self.config, self.topic)
        source.subscribe(lambda partitions: {})
        return source

    def append(self, values: list[bytes]) -> None:
        produce(self.bootstrap, self.topic, [(b"k", v) for v in values])


class MemoryPair:
    def __init__(self) -> None:
        self.topic = "contract"
        self.source = MemorySource(self.topic)

    def connect(self) -> MemorySource:
        again = MemorySource(self.topic)  # a new consumer of the same log and group
        again.logs, again.committed = self.source.logs, self.source.committed
        again.positions = {p: again.committed.get((self.topic, p), 0) for p in again.logs}
        return again

    def append(self, values: list[bytes]) -> None:
        for v in values:
            self.source.append(v, key=b"k")


@pytest.fixture(params=["memory", "kafka"])
def pair(request):
    p = MemoryPair() if request.param == "memory" else KafkaPair()
    yield p
    p.source.close()


def poll_until(source, count: int, timeout_s: float = 60.0) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += source.poll(0.5, 100)
    return records


def test_source_returns_records_in_offset_order_and_resumes_from_the_commit(pair):
    pair.append([b"a", b"b", b"c", b"d"])
    records = poll_until(pair.source, 4)
    assert [r.value for r in records] == [b"a", b"b", b"c", b"d"]
    assert [r.offset for r in records] == [0, 1, 2, 3] and records[0].key == b"k"
    assert pair.source.assignment() == {(pair.topic, 0)}
    assert pair.source.commit({(pair.topic, 0): 2}) is True
    pair.source.close()
    pair.source = pair.connect()  # a restart, or the partition's next owner
    again = poll_until(pair.source, 2)
    assert [r.value for r in again] == [b"c", b"d"]


def test_a_paused_source_returns_nothing_until_resumed(pair):
    pair.append([b"a"])
    assert [r.value for r in poll_until(pair.source, 1)] == [b"a"]
    pair.source.pause()
    pair.append([b"b"])
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert pair.source.poll(0.3, 100) == []
    pair.source.resume()
    assert [r.value for r in poll_until(pair.source, 1)] == [b"b"]


@pytest.fixture(params=["memory", "kafka"])
def sink(request):
    """(sink, a fresh topic, read(topic, n) -> the published JSON values)."""
    topic = unique("contract-out")
    if request.param == "memory":
        s = MemorySink()
        yield s, topic, lambda n: [json.loads(m.value) for m in s.on(topic)]
        return
    bootstrap, _ = require_services()
    create_topic(bootstrap, topic, 1)
    s = KafkaVerdictSink.connect(KafkaConfig(bootstrap, "unused", "contract-sink"))
    yield s, topic, lambda n: read_topic(bootstrap, topic, n)
    s.close()


def test_published_messages_are_all_there_once_publish_returns(sink):
    s, topic, read = sink
    s.publish([Outgoing(topic, b"k1", b'{"n": 1}'), Outgoing(topic, b"k2", b'{"n": 2}')])
    assert sorted(m["n"] for m in read(2)) == [1, 2]



HEADERS = (("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
           ("x-id", b"\xff\x00raw"), ("x-id", b"again"))


def test_the_source_gives_kafka_headers_as_they_came(pair):
    """(name, bytes) pairs, in order, a repeated name kept twice."""
    if isinstance(pair, MemoryPair):
        pair.source.append(b"a", key=b"k", headers=HEADERS)
    else:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=pair.bootstrap, acks="all")
        producer.send(pair.topic, key=b"k", value=b"a", headers=list(HEADERS))
        producer.flush()
        producer.close()
    pair.append([b"b"])
    assert [r.headers for r in poll_until(pair.source, 2)] == [HEADERS, ()]


def test_the_sink_publishes_each_messages_headers(sink):
    s, topic, read = sink
    s.publish([Outgoing(topic, b"k1", b'{"n": 1}', HEADERS), Outgoing(topic, b"k2", b'{"n": 2}')])
    assert len(read(2)) == 2
    if isinstance(s, MemorySink):
        got = [m.headers for m in s.on(topic)]
    else:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=require_services()[0], group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=1500)
        got = [tuple(m.headers or ()) for m in consumer]
        consumer.close()
    assert got == [HEADERS, ()]
