"""The worker as a process under faults: SIGKILL mid-run, SIGTERM, a Redis outage, URLs that
drip one byte a second. Nothing is lost and no offset is committed ahead of its result."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import image_bytes, make_image
from services import committed, end_offsets, start_redis, stop_redis
from worker_runs import run, services  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.services, pytest.mark.slow]


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
