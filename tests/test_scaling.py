"""Horizontal scaling: workers join and leave a group under load with no loss, and no offset is
ever committed ahead of its published result (sampled while the group is changing).

The load is paced by the group, not by the clock: on a slow machine a worker can take longer to
start than a timed stream takes to run, and a late joiner would then find nothing left to do.
"""
from __future__ import annotations

import threading
import time

import pytest

from services import end_offsets, require_services
from worker_runs import Run

pytestmark = [pytest.mark.services, pytest.mark.slow]
CHUNK, PAUSE_S = 30, 0.8


def steady_load(run: Run, refs: list[tuple[str, str]], gates: dict[int, threading.Event],
                stop: threading.Event) -> None:
    """Send refs in chunks, one every PAUSE_S; before refs[i], wait for gates[i] to be set."""
    for start in range(0, len(refs), CHUNK):
        gate = gates.get(start)
        while gate is not None and not gate.wait(0.5):
            if stop.is_set():
                return
        if stop.is_set():
            return
        run.send(refs[start:start + CHUNK])
        time.sleep(PAUSE_S)


def test_three_workers_scale_up_and_down_under_load(tmp_path):
    run = Run(tmp_path, require_services(), partitions=6)
    total = 1200
    refs = [(f"m{i}", run.image_uri(i, size=96)) for i in range(total)]
    ids = {i for i, _ in refs}
    # The first 300 go to w1-w3; the next 600 only once w4 owns partitions, so some of them must
    # reach it; the last 300 only after the crash, so every partition gets messages that only a
    # live owner can handle and commit (w3's uncommitted tail included, before it).
    joined, crashed, stop = threading.Event(), threading.Event(), threading.Event()
    producer = threading.Thread(target=steady_load, daemon=True,
                                args=(run, refs, {300: joined, 900: crashed}, stop))
    try:
        workers = {name: run.start_worker(name) for name in ("w1", "w2", "w3")}
        producer.start()
        workers["w1"].wait_handled(30)
        # Scale up. Ready means the join is complete: w4 owns partitions (6 among 4 members:
        # at least one each) and keeps them until the group changes again.
        workers["w4"] = run.start_worker("w4")
        joined.set()
        workers["w4"].wait_handled(1, timeout_s=120)  # the newcomer takes a share of the work
        run.assert_commits_never_ahead_of_results()
        assert workers["w2"].terminate() == 0           # scale down, gracefully
        run.assert_commits_never_ahead_of_results()
        workers["w3"].kill()                            # and a crash
        crashed.set()
        run.assert_commits_never_ahead_of_results()
        producer.join(timeout=300)
        assert sum(end_offsets(run.bootstrap, run.input, 6).values()) == total, "load unfinished"
        verdicts, dead = run.results(total, timeout_s=240)
        seen = {v["id"] for v in verdicts}
        deadline = time.monotonic() + 120
        while seen != ids and time.monotonic() < deadline:
            time.sleep(1)
            seen = {v["id"] for v in run.results(0, 0)[0]}
        assert seen == ids and not dead  # nothing lost; duplicates are allowed
        for name in ("w1", "w4"):
            assert workers[name].terminate() == 0
        commits = run.assert_commits_never_ahead_of_results()
        assert commits == end_offsets(run.bootstrap, run.input, 6)
    finally:
        stop.set()
        run.close()
