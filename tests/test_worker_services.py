"""The worker as a process against the real Kafka and Redis: every reference gets exactly one
result, two workers share a topic, and values in Redis it cannot use are judged afresh."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from detector.batcher import BatchPolicy
from detector.images import decode_image
from detector.service import Detector
from worker.adapters.redis_cache import RedisVerdictCache
from worker.cache_match import ENTRY_VERSION, decode_entry, fingerprint
from worker.metrics import Metrics
from worker.pipeline import Pipeline, PipelineConfig
from worker.testing import MemoryFetcher, MemorySink, MemorySource

from conftest import image_bytes, make_image
from services import committed, end_offsets, unique
from test_images import png_with_header_size
from worker_runs import MAX_BYTES, Run, run, services  # noqa: F401 (run, services: fixtures)

pytestmark = [pytest.mark.services, pytest.mark.slow]


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
           b'[0.1, 0.2]',
           b'{"v": %d, "score": "0.1", "experts": {"a": 1}, "spread": 0}' % ENTRY_VERSION]
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
