"""The worker as a process, against the real Kafka and Redis (deploy/local/services.sh)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from detector.batcher import BatchPolicy
from detector.images import decode_image
from detector.service import Detector
from worker.cache_match import decode_entry, fingerprint
from worker.metrics import Metrics
from worker.pipeline import Pipeline, PipelineConfig
from worker.ports import MemoryFetcher, MemorySink, MemorySource
from worker.redis_cache import RedisVerdictCache

from conftest import image_bytes, make_image, write_tiny_bundle
from services import (
    WorkerProcess, committed, create_topic, end_offsets, produce, read_topic,
    require_services, start_redis, stop_redis, unique,
)
from test_images import png_with_header_size

pytestmark = [pytest.mark.services, pytest.mark.slow]
MAX_BYTES = 300_000


@pytest.fixture
def services():
    return require_services()


@pytest.fixture
def http_server():
    """A loopback image server: /ok.png serves an image, anything else is a 404."""
    body = image_bytes(make_image(64, 64, seed=123))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/ok.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class Run:
    """One test's topics, group, bundle, images and workers."""

    def __init__(self, tmp_path: Path, services, partitions: int = 1) -> None:
        self.bootstrap, self.redis_url = services
        self.tmp = tmp_path
        self.input, self.verdicts, self.dead = unique("refs"), unique("verdicts"), unique("dead")
        self.group = unique("group")
        self.partitions = partitions
        for topic in (self.input, self.verdicts, self.dead):
            create_topic(self.bootstrap, topic, partitions if topic == self.input else 1)
        self.bundle = write_tiny_bundle(tmp_path / "bundle", version=unique("tiny"))
        self.images = tmp_path / "images"
        self.images.mkdir()
        self.workers: list[WorkerProcess] = []

    def image_uri(self, seed: int, size: int = 48) -> str:
        path = self.images / f"img{seed}.png"
        if not path.exists():
            make_image(size, size, seed=seed).save(path)
        return path.as_uri()

    def send(self, refs: list[tuple[str, str]]) -> None:
        produce(self.bootstrap, self.input,
                [(i.encode(), json.dumps({"id": i, "uri": u}).encode()) for i, u in refs])

    def send_raw(self, key: str, value: bytes) -> None:
        produce(self.bootstrap, self.input, [(key.encode(), value)])

    def start_worker(self, name: str, **extra: str) -> WorkerProcess:
        env = {
            "FEATDISTILL_BUNDLE": str(self.bundle), "FEATDISTILL_DEVICE": "cpu",
            "FEATDISTILL_KAFKA_BOOTSTRAP": self.bootstrap, "FEATDISTILL_REDIS_URL": self.redis_url,
            "FEATDISTILL_GROUP_ID": self.group, "FEATDISTILL_INPUT_TOPIC": self.input,
            "FEATDISTILL_VERDICT_TOPIC": self.verdicts, "FEATDISTILL_DEAD_LETTER_TOPIC": self.dead,
            "FEATDISTILL_FILE_ROOTS": json.dumps([str(self.images)]),
            "FEATDISTILL_ALLOW_HOSTS": json.dumps(["127.0.0.1"]),
            "FEATDISTILL_METRICS_PORT": "0", "FEATDISTILL_WORKER_ID": name,
            "FEATDISTILL_SESSION_TIMEOUT_MS": "6000", "FEATDISTILL_HEARTBEAT_INTERVAL_MS": "1000",
            "FEATDISTILL_MAX_BATCH": "16", "FEATDISTILL_MAX_WAIT_MS": "20",
            "FEATDISTILL_FETCH_MAX_BYTES": str(MAX_BYTES), "FEATDISTILL_MAX_PIXELS": "4000000",
            "FEATDISTILL_FETCH_RETRIES": "1", "FEATDISTILL_LOG_FORMAT": "json",
            "FEATDISTILL_SHUTDOWN_GRACE_S": "30", **extra,
        }
        worker = WorkerProcess(env, self.tmp / f"{name}.log")
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def results(self, expect: int, timeout_s: float = 120.0) -> tuple[list[dict], list[dict]]:
        """Verdicts and dead letters, waiting until together they number at least `expect`."""
        deadline = time.monotonic() + timeout_s
        while True:
            verdicts = read_topic(self.bootstrap, self.verdicts, 0, 0)
            dead = read_topic(self.bootstrap, self.dead, 0, 0)
            if len(verdicts) + len(dead) >= expect or time.monotonic() > deadline:
                return verdicts, dead
            time.sleep(0.5)

    def input_ids_by_offset(self) -> dict[tuple[int, int], str]:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(self.input, bootstrap_servers=self.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=1500)
        out = {(m.partition, m.offset): (m.key or b"").decode() for m in consumer}
        consumer.close()
        return out

    def assert_commits_never_ahead_of_results(self) -> dict[int, int]:
        # Commits first, results second: a result is published before its offset is committed,
        # so anything below a commit read now must be among the results read after it.
        commits = committed(self.bootstrap, self.group, self.input, self.partitions)
        verdicts, dead = self.results(0, 0)
        done = {r["id"] for r in verdicts} | {d["original"]["key"] for d in dead}
        for (partition, offset), key in self.input_ids_by_offset().items():
            if offset < commits[partition]:
                assert key in done, f"offset {offset} of partition {partition} committed " \
                                    f"before its result ({key}) was published"
        return commits

    def close(self) -> None:
        for w in self.workers:
            w.close()


@pytest.fixture
def run(tmp_path, services):
    r = Run(tmp_path, services)
    yield r
    r.close()


def by_id(records: list[dict], key: str = "id") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r[key] if key == "id" else r["original"]["key"], []).append(r)
    return out


def test_500_references_with_duplicates_and_bad_ones(run, http_server):
    refs, duplicates = [], set()
    for i in range(399):
        refs.append((f"ok-{i}", run.image_uri(i)))
    for i in range(75):
        refs.append((f"dup-{i}", run.image_uri(i * 5)))  # the same image as ok-{5i}
        duplicates.add(f"dup-{i}")
    (run.images / "big.png").write_bytes(b"\x89PNG" + b"\0" * (MAX_BYTES + 10))
    (run.images / "bomb.png").write_bytes(png_with_header_size(50_000, 50_000))
    (run.images / "text.jpg").write_text("this is not an image at all")
    bad = {
        "missing": (run.images / "nope.png").as_uri(),
        "http404": f"{http_server}/missing.png",
        "private": "http://10.0.0.5/image.png",
        "outside": "file:///etc/hostname",
        "traversal": (run.images.as_uri() + "/../../etc/passwd"),
        "oversized": (run.images / "big.png").as_uri(),
        "bomb": (run.images / "bomb.png").as_uri(),
        "text": (run.images / "text.jpg").as_uri(),
    }
    for i in range(3):
        for name, uri in bad.items():
            refs.append((f"bad-{name}-{i}", uri))
    refs.append(("http-ok", f"{http_server}/ok.png"))
    run.send(refs[:250])
    run.send_raw("not-json", b"\x00\xffnot json at all")
    run.send(refs[250:])
    total = len(refs) + 1
    assert total == 500
    worker = run.start_worker("w1")
    verdicts, dead = run.results(total)
    v_ids = [v["id"] for v in verdicts]
    d_ids = [d["original"]["key"] for d in dead]
    assert len(v_ids) + len(d_ids) == total, worker.log()
    assert set(v_ids) | set(d_ids) == {i for i, _ in refs} | {"not-json"}
    assert len(set(v_ids)) == len(v_ids) and not set(v_ids) & set(d_ids)  # exactly once
    assert set(d_ids) == {i for i, _ in refs if i.startswith("bad-")} | {"not-json"}
    kinds = {d["original"]["key"].split("-")[1]: d["error_kind"] for d in dead if d["id"]}
    assert kinds["private"] == "fetch_blocked_address"
    assert kinds["outside"] == kinds["traversal"] == "fetch_outside_roots"
    assert kinds["oversized"] == "fetch_too_large"
    assert kinds["bomb"] == "decode_too_many_pixels"
    assert kinds["text"] == "decode_not_an_image"
    assert kinds["missing"] == "fetch_not_found" and kinds["http404"] == "fetch_http_error"
    judged = {v["id"]: not v["cached"] and v["duplicate_of"] is None for v in verdicts}
    for i in range(75):  # of each pair of identical images exactly one was judged
        assert [judged[f"ok-{i * 5}"], judged[f"dup-{i}"]].count(True) == 1
    reused = [v for v in verdicts if v["id"].startswith("dup-") or v["id"].startswith("ok-")]
    assert all(v["cache"] in (None, "exact") for v in reused)  # identical files: never "near"
    assert worker.metric('featdistill_cache_hits_total{kind="exact"}') \
        + worker.metric("featdistill_inflight_duplicates_total") >= 75
    assert worker.terminate() == 0
    assert committed(run.bootstrap, run.group, run.input, 1) == end_offsets(run.bootstrap, run.input, 1)


def test_sigkill_mid_run_then_restart_loses_nothing(run):
    n = 1000
    run.send([(f"m{i}", run.image_uri(i, size=160)) for i in range(n)])
    worker = run.start_worker("victim", FEATDISTILL_MAX_BATCH="4")
    worker.wait_handled(40)
    worker.kill()
    verdicts, _ = run.results(0, 0)
    assert len(verdicts) < n, "the worker finished before it could be killed"
    run.assert_commits_never_ahead_of_results()
    again = run.start_worker("successor")
    verdicts, dead = run.results(n + 0)
    ids = {v["id"] for v in verdicts}
    deadline = time.monotonic() + 120
    while len(ids) < n and time.monotonic() < deadline:
        ids = {v["id"] for v in run.results(0, 0)[0]}
        time.sleep(0.5)
    assert ids == {f"m{i}" for i in range(n)} and not dead  # duplicates allowed, none missing
    assert again.terminate() == 0
    commits = run.assert_commits_never_ahead_of_results()
    assert commits == end_offsets(run.bootstrap, run.input, 1)


def test_redis_outage_mid_run(run):
    worker = run.start_worker("w1")
    run.send([(f"a{i}", run.image_uri(i)) for i in range(60)])
    run.results(60)
    stop_redis()
    try:
        run.send([(f"b{i}", run.image_uri(100 + i)) for i in range(60)])
        run.results(120)
        assert worker.metric("featdistill_cache_up") == 0
        assert worker.metric("featdistill_cache_errors_total") > 0
    finally:
        start_redis()
    time.sleep(2.5)  # the cache is retried after its back-off
    run.send([(f"c{i}", run.image_uri(200 + i)) for i in range(60)])
    run.send([(f"d{i}", run.image_uri(200 + i)) for i in range(20)])  # now cached again
    verdicts, dead = run.results(200)
    ids = {v["id"] for v in verdicts}
    assert len(ids) == 200 and not dead, worker.log()
    assert worker.metric("featdistill_cache_up") == 1
    # cached, or (when polled together with its twin) sharing its twin's judging
    assert all(v["cached"] or v["duplicate_of"] for v in verdicts if v["id"].startswith("d"))
    assert worker.terminate() == 0


def test_two_workers_share_six_partitions_and_take_over(tmp_path, services):
    run = Run(tmp_path, services, partitions=6)
    try:
        w1, w2 = run.start_worker("w1"), run.start_worker("w2")
        time.sleep(3)  # let the second join settle into a 3+3 assignment
        run.send([(f"a{i}", run.image_uri(i)) for i in range(240)])
        verdicts, dead = run.results(240)
        assert {v["worker_id"] for v in verdicts} == {"w1", "w2"}
        assert w1.terminate() == 0
        run.send([(f"b{i}", run.image_uri(300 + i)) for i in range(120)])
        verdicts, dead = run.results(360)
        ids = {v["id"] for v in verdicts}
        assert ids == {f"a{i}" for i in range(240)} | {f"b{i}" for i in range(120)} and not dead
        assert {v["worker_id"] for v in verdicts if v["id"].startswith("b")} == {"w2"}
        assert w2.terminate() == 0
        commits = run.assert_commits_never_ahead_of_results()
        assert commits == end_offsets(run.bootstrap, run.input, 6)
    finally:
        run.close()


def test_sigterm_drains_and_exits_zero(run):
    run.send([(f"m{i}", run.image_uri(i, size=160)) for i in range(1000)])
    worker = run.start_worker("w1", FEATDISTILL_MAX_BATCH="8", FEATDISTILL_MAX_WAIT_MS="1000")
    worker.wait_handled(30)
    assert worker.terminate() == 0
    log_lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "draining" for line in log_lines)
    assert any(line.get("event") == "worker_stopped" for line in log_lines)
    commits = run.assert_commits_never_ahead_of_results()
    verdicts, _ = run.results(0, 0)
    # The drain committed right up to the first message without a result: what it abandoned
    # (work that would not fit in the grace period) is uncommitted, to be replayed.
    done = {v["id"] for v in verdicts}
    ids = run.input_ids_by_offset()
    first_unfinished = min([o for (_, o), key in ids.items() if key not in done], default=len(ids))
    assert commits[0] == first_unfinished > 0


@pytest.fixture
def dripping_server():
    """/slow/N drips one byte a second (a stalled upload host); /ok/N serves an image at once."""
    body = image_bytes(make_image(64, 64, seed=7))
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path.startswith("/ok/"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(60):  # bounded: the handler ends by itself
                    if stop.wait(1.0):
                        return
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            except OSError:
                pass  # the worker gave up on us

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()


def test_slow_urls_neither_stall_the_others_nor_get_the_worker_evicted(run, dripping_server):
    # max.poll.interval 6 s is shorter than one slow fetch (8 s deadline): a loop that waited
    # for its fetches would be evicted from the group and its poll handed to another worker.
    refs = [(f"ok-{i}", f"{dripping_server}/ok/{i}") for i in range(30)]
    for i in range(6):
        refs.insert(i * 5, (f"slow-{i}", f"{dripping_server}/slow/{i}"))
    run.send(refs)
    worker = run.start_worker(
        "w1", FEATDISTILL_MAX_POLL_INTERVAL_MS="6000", FEATDISTILL_FETCH_TOTAL_TIMEOUT_S="8",
        FEATDISTILL_FETCH_READ_TIMEOUT_S="5", FEATDISTILL_FETCH_THREADS="16",
        FEATDISTILL_FETCH_RETRIES="0")
    verdicts, dead = run.results(len(refs), timeout_s=90)
    assert sorted(v["id"] for v in verdicts) == sorted(i for i, _ in refs if i.startswith("ok-"))
    assert sorted(d["error_kind"] for d in dead) == ["fetch_timeout"] * 6
    # The fast ones were published while the slow ones were still dripping.
    assert max(v["latency_ms"] for v in verdicts) < 8000, worker.log()
    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    # Joined once and never evicted (an empty first assignment, before the topic's metadata
    # arrived, is not a rebalance).
    moves = [(r["event"], r["partitions"]) for r in records
             if r.get("event") in ("partitions_assigned", "partitions_revoked") and r["partitions"]]
    assert moves == [("partitions_assigned", [[run.input, 0]])], moves
    assert worker.terminate() == 0
    assert committed(run.bootstrap, run.group, run.input, 1) == end_offsets(run.bootstrap, run.input, 1)


def test_unusable_cache_values_in_redis_are_counted_misses(services, tiny_bundle):
    """Garbage, a partial value, the first format, wrong types and a key of another Redis type,
    written to the real Redis under the keys the worker reads: it judges afresh and overwrites."""
    import redis

    _, redis_url = services
    client = redis.Redis.from_url(redis_url)
    metrics = Metrics()
    cfg = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(4, 0.0),
                         cache_prefix=unique("fd-invalid"))
    blobs = {f"mem://img{i}": image_bytes(make_image(48, 48, seed=i)) for i in range(6)}
    source, sink = MemorySource("refs"), MemorySink()
    cache = RedisVerdictCache.from_url(redis_url, 60, metrics)
    p = Pipeline(cfg, source, MemoryFetcher(blobs), cache, sink, Detector.load(tiny_bundle), metrics)
    keys = [p.lookup.key(fingerprint(b, decode_image(b))) for b in blobs.values()]
    bad = [b"\x00\xffgarbage", b'{"score": 0.1}',
           b'{"score": 0.1, "experts": {"a": 0.1}, "spread": 0.0}',  # the first format
           b'[0.1, 0.2]', b'{"v": 3, "score": "0.1", "experts": {"a": 1}, "spread": 0}']
    for key, value in zip(keys, bad):
        client.set(key, value, ex=60)
    client.hset(keys[5], "score", "0.1")  # not a string at all: MGET answers nil
    client.expire(keys[5], 60)
    try:
        for i in range(6):
            source.append(json.dumps({"id": f"m{i}", "uri": f"mem://img{i}"}).encode())
        for _ in range(3):
            p.step()
        p.drain()
        verdicts = [json.loads(m.value) for m in sink.on("verdicts")]
        assert len(verdicts) == 6 and not sink.on("dead")
        assert not any(v["cached"] for v in verdicts)  # all judged afresh
        reasons = {r: metrics.value("featdistill_cache_invalid_total", reason=r)
                   for r in ("not_json", "unversioned", "not_an_object", "invalid")}
        assert reasons == {"not_json": 1, "unversioned": 2, "not_an_object": 1, "invalid": 1}
        for key in keys:  # every key now holds a valid entry, the wrong-typed one included
            assert not isinstance(decode_entry(client.get(key)), str)
        for i in range(6):  # and the same images now hit
            source.append(json.dumps({"id": f"again{i}", "uri": f"mem://img{i}"}).encode())
        p.step()
        p.drain()
        again = [json.loads(m.value) for m in sink.on("verdicts")][6:]
        assert [v["cache"] for v in again] == ["exact"] * 6
    finally:
        p.close()
        client.delete(*keys)
