"""The pipeline against in-memory fakes: outcomes, cache, batching, commits, crash safety."""
from __future__ import annotations

import json

import pytest

from detector.batcher import BatchPolicy
from detector.service import Detector
from worker.metrics import Metrics
from worker.pipeline import Pipeline, PipelineConfig
from worker.ports import FetchError
from worker.cache_match import ENTRY_VERSION
from worker.testing import FakeJudge, MemoryCache, MemoryFetcher, MemorySink, MemorySource

from conftest import image_bytes, make_image
from test_cache_match import photo, smooth_refill

CFG = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(4, 0.0), poll_max_records=50)


def FetchFailure(kind):  # noqa: N802 (reads like the exception it makes)
    return FetchError(kind, f"simulated {kind}")


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle)


def ref(i, uri=None):
    return json.dumps({"id": f"m{i}", "uri": uri or f"mem://img{i}"}).encode()


def build(judge, partitions=1, blobs=None, errors=None, cfg=CFG):
    source = MemorySource("refs", partitions)
    blobs = blobs if blobs is not None else {
        f"mem://img{i}": image_bytes(make_image(40, 30, seed=i)) for i in range(20)}
    fetcher = MemoryFetcher(blobs, errors)
    sink, cache = MemorySink(), MemoryCache()
    p = Pipeline(cfg, source, fetcher, cache, sink, judge, Metrics())
    return p, source, sink, cache


def step_until_fetched(p, limit_s=20.0):
    """Step until every polled message is fetched and routed (fetches run in a pool)."""
    import time

    deadline = time.monotonic() + limit_s
    p.step()
    while p.fetch_backlog and time.monotonic() < deadline:
        p.step()


def run_until_idle(p, steps=10):
    for _ in range(steps):
        p.step()
    p.drain()


def outcomes(sink):
    verdicts = {json.loads(m.value)["id"]: json.loads(m.value) for m in sink.on("verdicts")}
    dead = [json.loads(m.value) for m in sink.on("dead")]
    return verdicts, dead


def test_every_message_gets_exactly_one_result_and_offsets_commit(detector):
    p, source, sink, cache = build(detector, errors={"mem://gone": FetchFailure("not_found")})
    for i in range(10):
        source.append(ref(i), key=f"m{i}".encode())
    source.append(b"{not json")
    source.append(ref(99, "mem://gone"))
    source.append(json.dumps({"id": "x"}).encode())  # no uri
    source.append(ref(98, "mem://img0"))  # a duplicate image
    run_until_idle(p)
    verdicts, dead = outcomes(sink)
    assert set(verdicts) == {f"m{i}" for i in range(10)} | {"m98"}
    assert sorted(d["error_kind"] for d in dead) == ["fetch_not_found", "invalid_message", "not_json"]
    assert source.committed == {("refs", 0): 14}
    v = verdicts["m3"]
    assert v["label"] in ("ai_generated", "real") and len(v["experts"]) == 4
    assert v["model_version"] == "tiny-test" and len(v["phash"]) == 16 and len(v["sha256"]) == 64
    # Fetches finish in any order: whichever of the two identical images comes second is judged
    # with the first, not again.
    reused = [bool(verdicts[i]["cached"] or verdicts[i]["duplicate_of"]) for i in ("m0", "m98")]
    assert sorted(reused) == [False, True]  # one judged, the other a duplicate or a cache hit
    assert verdicts["m98"]["score"] == verdicts["m0"]["score"]
    broken = next(d for d in dead if d["error_kind"] == "not_json")
    assert broken["original"]["value_text"] == "{not json" and broken["id"] is None


def test_cache_hits_skip_inference_and_rewrite_nothing(detector):
    p, source, sink, cache = build(detector)
    for i in range(4):
        source.append(ref(i))
    run_until_idle(p, 2)
    judged, stored = p.metrics.value("featdistill_batch_size_sum"), dict(cache.data)
    assert judged == 4 and len(stored) == 4
    for i in range(4):
        source.append(ref(100 + i, f"mem://img{i}"))
    run_until_idle(p, 2)  # 2 steps and a drain
    verdicts, _ = outcomes(sink)
    assert all(verdicts[f"m{100 + i}"]["cached"] for i in range(4))
    assert {verdicts[f"m{100 + i}"]["cache"] for i in range(4)} == {"exact"}
    assert verdicts["m102"]["score"] == verdicts["m2"]["score"]
    assert p.metrics.value("featdistill_batch_size_sum") == judged  # no image judged again
    assert cache.data == stored
    assert p.metrics.value("featdistill_cache_hits_total", kind="exact") == 4


def test_outage_of_the_cache_only_costs_speed(detector):
    p, source, sink, cache = build(detector)
    cache.down = True
    for i in range(6):
        source.append(ref(i))
    run_until_idle(p)
    verdicts, dead = outcomes(sink)
    assert len(verdicts) == 6 and not dead and not any(v["cached"] for v in verdicts.values())


def test_a_failed_publish_commits_nothing_and_replay_completes(detector):
    p, source, sink, cache = build(detector)
    for i in range(6):
        source.append(ref(i))
    sink.fail_next = 1
    with pytest.raises(ConnectionError):
        run_until_idle(p)
    assert source.committed == {}
    # The process restarts: a new pipeline reads from the last commit.
    source.positions = {0: 0}
    p2 = Pipeline(CFG, source, p.fetcher, cache, sink, p.judge, Metrics())
    run_until_idle(p2)
    verdicts, _ = outcomes(sink)
    assert len(verdicts) == 6 and source.committed == {("refs", 0): 6}


def test_inference_error_dead_letters_the_whole_batch():
    p, source, sink, cache = build(FakeJudge(fail_with=RuntimeError("CUDA error: out of memory")))
    for i in range(3):
        source.append(ref(i))
    run_until_idle(p)
    _, dead = outcomes(sink)
    assert [d["error_kind"] for d in dead] == ["inference_error"] * 3
    assert all("out of memory" in d["error"] for d in dead)
    assert source.committed == {("refs", 0): 3} and not cache.data  # nothing judged is cached


def test_uncertain_label_when_experts_disagree(detector):
    cfg = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(4, 0.0),
                         uncertain_spread=0.0)
    p, source, sink, _ = build(detector, cfg=cfg)
    source.append(ref(1))
    run_until_idle(p)
    verdicts, _ = outcomes(sink)
    assert verdicts["m1"]["label"] == "uncertain"


def test_commit_never_passes_a_message_waiting_in_a_batch(detector):
    cfg = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(8, 60.0))
    p, source, sink, _ = build(detector, cfg=cfg)
    source.append(ref(0))
    source.append(b"garbage")  # dead-lettered at once, but offset 0 still waits in the batch
    step_until_fetched(p)
    assert len(sink.on("dead")) == 1 and not sink.on("verdicts")
    assert source.committed.get(("refs", 0), 0) == 0
    p.drain()
    assert source.committed == {("refs", 0): 2}


def test_revocation_abandons_the_lost_partitions_work_without_committing_it(detector):
    cfg = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(8, 60.0))
    p, source, sink, _ = build(detector, partitions=2, cfg=cfg)
    source.append(ref(0), partition=0)
    source.append(ref(1), partition=1)
    source.append(ref(2, "mem://img0"), partition=1)  # same image as m0: a follower of it
    source.append(ref(3, "mem://img1"), partition=0)  # same image as m1: m1's follower
    step_until_fetched(p)
    assert not sink.on("verdicts") and len(p.batcher) == 2
    assert p.on_revoke({("refs", 1)}) == {("refs", 1): 0}  # read it again from offset 0
    assert not sink.messages and not source.committed  # nothing published or committed there
    p.drain()
    verdicts, _ = outcomes(sink)
    assert set(verdicts) == {"m0", "m3"}  # m3 inherited the judging of m1's image
    assert verdicts["m3"]["cached"] is False
    assert source.committed == {("refs", 0): 2}


def test_identical_images_in_flight_are_duplicates_not_cache_hits(detector):
    cfg = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(8, 60.0))
    p, source, sink, cache = build(detector, cfg=cfg)
    source.append(ref(0))
    source.append(ref(1, "mem://img0"))  # the same image, in the same poll
    step_until_fetched(p)
    p.drain()
    verdicts, _ = outcomes(sink)
    # Fetches finish in any order: whichever comes first is judged, the other rides along.
    leader, follower = sorted(("m0", "m1"), key=lambda i: verdicts[i]["duplicate_of"] is not None)
    assert verdicts[leader]["duplicate_of"] is None
    assert verdicts[follower]["duplicate_of"] == leader
    assert not verdicts["m0"]["cached"] and not verdicts["m1"]["cached"]
    assert verdicts[follower]["cache"] is None
    assert verdicts["m1"]["score"] == verdicts["m0"]["score"]
    m = p.metrics
    assert m.value("featdistill_inflight_duplicates_total") == 1
    assert m.value("featdistill_cache_hits_total", kind="exact") == 0
    assert m.value("featdistill_cache_misses_total") == 2
    assert m.value("featdistill_batch_size_sum") == 1  # judged once


def test_reencodes_are_near_hits_and_local_edits_are_judged_afresh(detector):
    img = photo()
    box = (90, 90, 154, 150)  # 5% of the picture, smoothly refilled: the pHash does not change
    blobs = {
        "mem://original": image_bytes(img, "JPEG", quality=92),
        "mem://reencoded": image_bytes(img.resize((240, 180)), "JPEG", quality=60),
        "mem://edited": image_bytes(smooth_refill(img, box), "JPEG", quality=92),
    }
    p, source, sink, cache = build(detector, blobs=blobs)
    source.append(ref(0, "mem://original"))
    run_until_idle(p, 2)
    source.append(ref(1, "mem://reencoded"))
    run_until_idle(p, 2)
    # Apart: fetches finish in any order, and whichever of the two is judged first takes the
    # key, so the other would be compared against it instead of against the original.
    source.append(ref(2, "mem://edited"))
    run_until_idle(p, 2)
    verdicts, _ = outcomes(sink)
    assert verdicts["m1"]["cached"] is True and verdicts["m1"]["cache"] == "near"
    assert verdicts["m2"]["cached"] is False and verdicts["m2"]["cache"] is None
    assert verdicts["m2"]["phash"] == verdicts["m0"]["phash"]  # same key: the old bug's case
    assert p.metrics.value("featdistill_cache_hits_total", kind="near") == 1
    assert p.metrics.value("featdistill_cache_mismatches_total") == 1
    stored = json.loads(cache.data[p.lookup.key(p_fingerprint(blobs["mem://edited"]))])
    assert stored["sha256"] == verdicts["m2"]["sha256"]  # the fresh verdict overwrote the entry


def p_fingerprint(data: bytes):
    from detector.images import decode_image
    from worker.cache_match import fingerprint

    return fingerprint(data, decode_image(data))


def test_unusable_cache_values_are_counted_misses_and_overwritten(detector):
    p, source, sink, cache = build(detector)
    values = [b"\x00\xffgarbage", b'{"score": 0.1}', b'{"score": 0.1, "experts": {}, "spread": 0}',
              b'[1, 2]', b'{"v": %d, "score": "high"}' % ENTRY_VERSION]
    for i, value in enumerate(values):
        cache.data[p.lookup.key(p_fingerprint(p.fetcher.blobs[f"mem://img{i}"]))] = value
        source.append(ref(i))
    run_until_idle(p)
    verdicts, dead = outcomes(sink)
    assert len(verdicts) == 5 and not dead and not any(v["cached"] for v in verdicts.values())
    reasons = {r: p.metrics.value("featdistill_cache_invalid_total", reason=r)
               for r in ("not_json", "unversioned", "not_an_object", "invalid")}
    assert reasons == {"not_json": 1, "unversioned": 2, "not_an_object": 1, "invalid": 1}
    for i in range(5):
        entry = json.loads(cache.data[p.lookup.key(p_fingerprint(p.fetcher.blobs[f"mem://img{i}"]))])
        assert entry["v"] == ENTRY_VERSION
