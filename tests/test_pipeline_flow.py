"""The pipeline's stages overlap and its intake is bounded; bugs stop it; readiness tells faults.

Against in-memory fakes; a fetcher that blocks on an event stands in for a slow URL.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from detector.batcher import BatchPolicy
from detector.service import Detector
from worker.metrics import Metrics
from worker.pipeline import Pipeline, PipelineConfig
from worker.ports import FetchError
from worker.readiness import Readiness, ReadinessPolicy
from worker.testing import MemoryCache, MemoryFetcher, MemorySink, MemorySource

from conftest import image_bytes, make_image


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle)


class SlowFetcher(MemoryFetcher):
    """Fetches of `slow` URIs block until `release` is set (a server dripping bytes)."""

    def __init__(self, blobs, slow=()):
        super().__init__(blobs)
        self.slow, self.release = set(slow), threading.Event()

    def fetch(self, uri):
        if uri in self.slow:
            self.release.wait(30)
        return super().fetch(uri)


def build(detector, fetcher, **cfg):
    config = PipelineConfig("refs", "verdicts", "dead", "w1", **{
        "batch": BatchPolicy(4, 0.05), "poll_timeout_s": 0.05, **cfg})
    source, sink = MemorySource("refs"), MemorySink()
    return Pipeline(config, source, fetcher, MemoryCache(), sink, detector, Metrics()), source, sink


def blobs(n, side=40):
    return {f"mem://img{i}": image_bytes(make_image(side, side, seed=i)) for i in range(n)}


def send(source, uris):
    for i, uri in enumerate(uris):
        source.append(json.dumps({"id": f"m{i}", "uri": uri}).encode())


def ids(sink, topic="verdicts"):
    return {json.loads(m.value)["id"] for m in sink.on(topic)}


def test_a_slow_fetch_delays_only_its_own_message(detector):
    fetcher = SlowFetcher(blobs(6), slow={"mem://img0"})
    p, source, sink = build(detector, fetcher)
    send(source, [f"mem://img{i}" for i in range(6)])
    try:
        deadline = time.monotonic() + 20
        while ids(sink) != {f"m{i}" for i in range(1, 6)}:
            t0 = time.monotonic()
            p.step()
            # A step never waits on the slow fetch beyond the poll timeout (plus inference).
            assert time.monotonic() - t0 < 5
            assert time.monotonic() < deadline, ids(sink)
        # The others were judged and published, but nothing is committed past the slow one.
        assert source.committed.get(("refs", 0), 0) == 0
    finally:
        fetcher.release.set()
    p.drain()
    assert ids(sink) == {f"m{i}" for i in range(6)} and source.committed == {("refs", 0): 6}


def test_intake_pauses_at_the_message_bound_and_resumes(detector):
    fetcher = SlowFetcher(blobs(8), slow={f"mem://img{i}" for i in range(8)})
    p, source, sink = build(detector, fetcher, max_in_flight=3)
    send(source, [f"mem://img{i}" for i in range(8)])
    for _ in range(5):
        p.step()
    assert len(p.fetching) == 3 and source.paused and source.positions[0] == 3
    fetcher.release.set()
    deadline = time.monotonic() + 20
    while len(ids(sink)) < 8 and time.monotonic() < deadline:
        p.step()
    p.drain()
    assert len(ids(sink)) == 8 and not source.paused and source.committed == {("refs", 0): 8}


def test_intake_pauses_at_the_byte_bound(detector):
    # The tiny model's inputs are 3 x (32^2 + 48^2) = 9,984 uint8 bytes held per image from
    # preprocessing to inference; the batch waits 60 s to fill.
    p, source, sink = build(detector, MemoryFetcher(blobs(6, side=64)),
                            batch=BatchPolicy(8, 60.0), max_in_flight_bytes=2 * 12_288)
    send(source, [f"mem://img{i}" for i in range(6)])
    deadline = time.monotonic() + 20
    while not source.paused and time.monotonic() < deadline:
        p.step()
    assert source.paused and len(p.batcher) >= 2
    assert p.metrics.value("featdistill_in_flight_pixel_bytes") >= 2 * 12_288
    p.drain()
    assert p.held_bytes == 0  # every held image was given back after inference


def test_a_bug_stops_the_loop_and_commits_nothing_past_it(detector):
    class Buggy(MemoryFetcher):
        def fetch(self, uri):
            if uri == "mem://img2":
                raise KeyError("a bug, not a bad reference")
            return super().fetch(uri)

    p, source, sink = build(detector, Buggy(blobs(4)), batch=BatchPolicy(1, 0.0))
    send(source, [f"mem://img{i}" for i in range(4)])
    with pytest.raises(KeyError):
        for _ in range(50):
            p.step()
    assert not sink.on("dead")  # not turned into a dead letter
    assert source.committed.get(("refs", 0), 0) <= 2


def test_expected_failures_are_dead_letters():
    fetcher = MemoryFetcher({}, errors={"mem://x": FetchError("blocked_address", "internal")})
    with pytest.raises(FetchError):
        fetcher.fetch("mem://x")
    with pytest.raises(FetchError, match="does not exist"):
        fetcher.fetch("mem://absent")


def test_readiness_tells_dead_letter_storms_stuck_publishes_and_dropped_commits():
    now = [0.0]
    r = Readiness(ReadinessPolicy(max_dead_letter_share=0.5, min_results=4, window_s=60,
                                  stuck_s=10), clock=lambda: now[0])
    assert not r.ready(assigned=False) and r.reason == "no partitions assigned"
    for dead in (False, True, True):
        r.result(dead)
    assert r.ready(assigned=True)  # 3 results say nothing yet
    r.result(True)
    assert not r.ready(assigned=True) and "3 of the last 4" in r.reason
    now[0] = 61.0  # they age out of the window
    assert r.ready(assigned=True)
    r.publishing(True)
    now[0] = 75.0
    assert not r.ready(assigned=True) and r.reason.startswith("publishing for")
    r.publishing(False)
    r.committed(False)
    assert not r.ready(assigned=True) and r.reason == "last commit dropped"
    r.committed(True)
    assert r.ready(assigned=True)


def test_a_fetched_backlog_is_routed_without_waiting_in_the_poll(detector):
    """Each step routes at most a few batches; a step that then waited a whole poll timeout with
    fetched images ready capped the worker at 4 batches per timeout (bench/worker_throughput.py:
    6 images/s at batch 1 on the tiny bundle)."""
    p, source, sink = build(detector, MemoryFetcher(blobs(24)), batch=BatchPolicy(1, 0.05),
                            poll_timeout_s=5.0)
    send(source, [f"mem://img{i}" for i in range(24)])
    waits = []
    polled = source.poll

    def recording_poll(timeout_s, max_records):
        waits.append((timeout_s, p.fetch_backlog))
        return polled(timeout_s, max_records)
    source.poll = recording_poll
    while len(ids(sink)) < 24:
        p.step()
    assert [w for w in waits if w[1] and w[0] > 0] == []  # a ready backlog never waits
