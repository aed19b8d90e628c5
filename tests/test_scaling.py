"""Horizontal scaling: workers join and leave a group under load with no loss, and no offset is
ever committed ahead of its published result (sampled while the group is changing)."""
from __future__ import annotations

import threading
import time

import pytest

from services import end_offsets, require_services
from test_worker_services import Run

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_three_workers_scale_up_and_down_under_load(tmp_path):
    run = Run(tmp_path, require_services(), partitions=6)
    total = 1200
    uris = [run.image_uri(i, size=96) for i in range(total)]
    ids = [f"m{i}" for i in range(total)]

    def load():  # a steady stream while workers come and go
        for start in range(0, total, 30):
            run.send(list(zip(ids[start:start + 30], uris[start:start + 30])))
            time.sleep(0.8)

    try:
        workers = {name: run.start_worker(name) for name in ("w1", "w2", "w3")}
        producer = threading.Thread(target=load)
        producer.start()
        workers["w1"].wait_handled(30)
        workers["w4"] = run.start_worker("w4")          # scale up
        run.assert_commits_never_ahead_of_results()
        assert workers["w2"].terminate() == 0           # scale down, gracefully
        run.assert_commits_never_ahead_of_results()
        workers["w3"].kill()                            # and a crash
        run.assert_commits_never_ahead_of_results()
        producer.join()
        verdicts, dead = run.results(total, timeout_s=240)
        seen = {v["id"] for v in verdicts}
        deadline = time.monotonic() + 120
        while seen != set(ids) and time.monotonic() < deadline:
            time.sleep(1)
            seen = {v["id"] for v in run.results(0, 0)[0]}
        assert seen == set(ids) and not dead  # nothing lost; duplicates are allowed
        assert workers["w4"].handled() > 0  # the newcomer took a share of the work
        for name in ("w1", "w4"):
            assert workers[name].terminate() == 0
        commits = run.assert_commits_never_ahead_of_results()
        assert commits == end_offsets(run.bootstrap, run.input, 6)
    finally:
        run.close()
