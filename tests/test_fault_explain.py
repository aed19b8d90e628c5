"""bench/fault_explain.py cuts a stall into what the group was doing: here on a made-up run
(two partitions, a worker killed, a rebalance, a replay), no workers needed."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from bench.fault_explain import explain_gaps, parse_metrics
from bench.fault_fixtures import VERDICT, Reference
from bench.fault_observe import Incarnation, Outcome
from worker.metrics import Metrics

T0 = 1_000_000.0


def log(path: Path, lines: list[tuple[float, str, list[int]]]) -> None:
    path.write_text("".join(json.dumps({
        "event": event, "partitions": [["in", p] for p in parts], "worker_id": path.stem[:2],
        "timestamp": datetime.fromtimestamp(T0 + at, timezone.utc).isoformat()}) + "\n"
        for at, event, parts in lines))


def incarnation(tmp_path: Path, name: str, started: float, lines) -> Incarnation:
    slot, number = name.split(".")
    path = tmp_path / f"{name}.log"
    log(path, lines)
    proc = subprocess.Popen(["true"])
    proc.wait()
    return Incarnation(slot, int(number), path, proc, started=T0 + started)


def test_a_gap_is_cut_into_held_by_the_killed_worker_then_rebalance_then_replay(tmp_path):
    # w0 owns partition 0, w1 partition 1; w1.1 is killed at 10 s (w1.2 starts then), the group
    # revokes at 20 s and hands partition 1 to w0 at 25 s; w0 redoes two references (25-28 s)
    # before the waiting one (produced at 9 s on partition 1) comes out at 30 s.
    w0 = incarnation(tmp_path, "w0.1", 0, [(1, "partitions_assigned", [0]),
                                             (20, "partitions_revoked", [0]),
                                             (25, "partitions_assigned", [0, 1])])
    w1 = incarnation(tmp_path, "w1.1", 0, [(1, "partitions_assigned", [1])])
    w1b = incarnation(tmp_path, "w1.2", 10, [(15, "worker_started", [])])
    refs = [Reference(f"r{i}", "good", b"{}", VERDICT) for i in range(4)]
    produced = {"r0": T0 + 2, "r1": T0 + 3, "r2": T0 + 9, "r3": T0 + 2}
    placed = {"r0": (1, 0), "r1": (1, 1), "r2": (1, 2), "r3": (0, 0)}
    outcomes = [Outcome("r3", "verdict", "w0", T0 + 3), Outcome("r0", "verdict", "w1", T0 + 4),
                Outcome("r1", "verdict", "w1", T0 + 5), Outcome("r0", "verdict", "w0", T0 + 26),
                Outcome("r1", "verdict", "w0", T0 + 27), Outcome("r2", "verdict", "w0", T0 + 30)]
    samples = [{"t": T0 + 12, "worker": "w0.1", "up": True, "assigned": 1, "in_flight": 0,
                "messages": 5, "lag": 0}, {"t": T0 + 28, "worker": "w0.1", "up": True,
                                           "assigned": 2, "in_flight": 1, "messages": 7, "lag": 1}]

    gaps = explain_gaps(refs, produced, placed, outcomes, [], [w0, w1, w1b], samples, T0, T0 + 40,
                        only_others=False)

    assert [(g["from_s"], g["seconds"]) for g in gaps] == [(9.0, 21.0)]
    slices = gaps[0]["slices_s"]
    assert slices["busy"] == 3.0  # 9-10 s (w1.1 alive, owning it), 28-30 s (the waiting one)
    assert slices["held by killed worker"] == 10.0  # 10-20 s
    assert slices["partitions unassigned"] == 5.0  # 20-25 s
    assert slices["replay"] == 3.0  # 25-28 s: the duplicates at 26 and 27 s
    assert gaps[0]["duplicate_outcomes"] == 2
    assert gaps[0]["metrics"]["w0.1"]["messages"] == 2
    assert gaps[0]["cause"].startswith("killed worker's partitions held")
    assert any("w1.2 worker_started" in line for line in gaps[0]["events"])


def test_metrics_are_read_from_the_workers_own_page():
    metrics = Metrics()
    metrics.assigned.set(2)
    metrics.in_flight.set(7)
    metrics.messages.labels("verdict").inc(5)
    metrics.messages.labels("dead_letter").inc(2)
    metrics.lag.labels("in", "0").set(3)
    metrics.lag.labels("in", "1").set(4)

    figures = parse_metrics(metrics.render().decode())

    assert figures == {"assigned": 2, "in_flight": 7, "messages": 7, "lag": 7, "cache_up": 1}


def test_after_a_broker_outage_the_wait_for_the_group_is_its_own_slice(tmp_path):
    # The broker is away from 5 to 10 s; the workers get partitions again only at 14 s (their
    # reconnect backoff); the waiting reference comes out at 16 s.
    w0 = incarnation(tmp_path, "w0.1", 0, [(1, "partitions_assigned", [0]),
                                             (13, "partitions_revoked", [0]),
                                             (14, "partitions_assigned", [0])])
    refs = [Reference("r0", "good", b"{}", VERDICT), Reference("r1", "good", b"{}", VERDICT)]
    produced, placed = {"r0": T0 + 1, "r1": T0 + 4}, {"r0": (0, 0), "r1": (0, 1)}
    outcomes = [Outcome("r0", "verdict", "w0", T0 + 2), Outcome("r1", "verdict", "w0", T0 + 16)]
    faults = [{"fault": "broker outage", "at_s": 5.0, "lasted_s": 5.0}]

    gaps = explain_gaps(refs, produced, placed, outcomes, faults, [w0], [], T0, T0 + 20,
                        only_others=True)

    assert gaps[0]["slices_s"] == {"broker down": 5.0, "broker back, no group": 4.0, "busy": 3.0}
    assert gaps[0]["cause"] == ("broker outage + broker back, workers not yet rejoined + "
                                "workers busy (loaded CPU), nothing finishing")


def test_the_sampler_reads_a_live_metrics_page_and_stops(tmp_path):
    from types import SimpleNamespace

    from bench.fault_explain import MetricsSampler
    from worker.health import HealthServer

    metrics = Metrics()
    metrics.assigned.set(3)
    server = HealthServer(metrics, lambda: True, 0, host="127.0.0.1").start()
    try:
        w0 = incarnation(tmp_path, "w0.1", 0, [])
        w0.log_path.write_text(json.dumps({"event": "worker_started",
                                           "metrics_port": server.port}) + "\n")
        sampler = MetricsSampler(SimpleNamespace(current={"w0": w0}), every_s=0.05)
        sampler.start()
        while not any(s.get("up") for s in sampler.samples):
            sampler.join(0.05)
        sampler.stop(tmp_path / "metrics.jsonl")
    finally:
        server.stop()
    assert not sampler.is_alive()
    up = [s for s in sampler.samples if s.get("up")]
    assert up[0]["assigned"] == 3 and up[0]["worker"] == "w0.1"
    assert any(s["worker"] == "host" for s in sampler.samples)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == len(sampler.samples)
