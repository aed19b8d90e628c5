"""What bench/fault_injection.py watches: the worker processes, the outcomes on the verdict and
dead-letter topics, and the workers' logs; and the figures made from them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ workers
@dataclass
class Incarnation:
    """One process of a worker slot: a restart after a kill is a new incarnation."""

    slot: str
    number: int
    log_path: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.time)
    killed: bool = False  # by the bench (kill -9): its exit is expected
    exit_code: int | None = None


class WorkerFleet:
    """`featdistill worker` subprocesses, one per slot, restarted when they die (as an
    orchestrator would). Exits the bench did not cause are recorded with their last log lines."""

    def __init__(self, env: dict[str, str], log_dir: Path, slots: int) -> None:
        self.env, self.log_dir = env, log_dir
        self.slots = [f"w{i}" for i in range(slots)]
        self.current: dict[str, Incarnation] = {}
        self.all: list[Incarnation] = []
        self.unexpected_exits: list[dict] = []
        self._lock = threading.Lock()

    def start_all(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: str) -> Incarnation:
        number = sum(1 for i in self.all if i.slot == slot) + 1
        log_path = self.log_dir / f"{slot}.{number}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shell.cli", "worker"], cwd=ROOT,
                env={**self.env, "FEATDISTILL_WORKER_ID": slot}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        inc = Incarnation(slot, number, log_path, proc)
        self.current[slot] = inc
        self.all.append(inc)
        return inc

    def kill_and_restart(self, slot: str) -> None:
        with self._lock:
            inc = self.current[slot]
            inc.killed = True
            inc.proc.send_signal(signal.SIGKILL)
            inc.exit_code = inc.proc.wait(30)
            self._start(slot)

    def check(self, t0: float) -> None:
        """Record and restart any worker that exited on its own."""
        with self._lock:
            for slot, inc in list(self.current.items()):
                code = inc.proc.poll()
                if code is None:
                    continue
                inc.exit_code = code
                self._record_exit(inc, t0, "exited while running")
                self._start(slot)

    def stop_all(self, t0: float, timeout_s: float = 90.0) -> None:
        """SIGTERM every worker (a drain); anything but exit 0 is recorded."""
        with self._lock:
            live = list(self.current.values())
            for inc in live:
                if inc.proc.poll() is None:
                    inc.proc.send_signal(signal.SIGTERM)
            for inc in live:
                try:
                    inc.exit_code = inc.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    inc.proc.kill()
                    inc.exit_code = inc.proc.wait(30)
                    self._record_exit(inc, t0, f"still running {timeout_s:.0f} s after SIGTERM")
                    continue
                if inc.exit_code != 0:
                    self._record_exit(inc, t0, "non-zero exit after SIGTERM")
            self.current = {}

    def _record_exit(self, inc: Incarnation, t0: float, how: str) -> None:
        lines = inc.log_path.read_text(errors="replace").splitlines()
        self.unexpected_exits.append({
            "worker": f"{inc.slot}.{inc.number}", "how": how, "exit_code": inc.exit_code,
            "at_s": round(time.time() - t0, 1), "last_log_lines": lines[-12:]})

    def logged(self, slot: str, needle: str) -> bool:
        inc = self.current.get(slot)
        return inc is not None and needle in inc.log_path.read_text(errors="replace")


# ------------------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    ref_id: str
    outcome: str  # "verdict" or "dead_letter:<kind>"
    worker: str
    at: float  # the worker's timestamp, epoch seconds


def parse_outcome(topic_is_verdict: bool, value: bytes) -> Outcome:
    body = json.loads(value)
    # A dead letter of a message too broken to name its id carries the original message's key
    # (the bench keys every reference by its id).
    ref_id = body.get("id") or (body.get("original") or {}).get("key") or ""
    outcome = "verdict" if topic_is_verdict else f"dead_letter:{body['error_kind']}"
    at = datetime.fromisoformat(body["timestamp"]).timestamp()
    return Outcome(ref_id, outcome, body.get("worker_id", ""), at)


class OutcomeReader:
    """Reads the verdict and dead-letter topics from the start, in a thread, through the broker
    restart (kafka-python reconnects on its own)."""

    def __init__(self, bootstrap: str, verdict_topic: str, dead_letter_topic: str) -> None:
        from kafka import KafkaConsumer

        self.verdict_topic = verdict_topic
        self.consumer = KafkaConsumer(
            verdict_topic, dead_letter_topic, bootstrap_servers=bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False,
            reconnect_backoff_max_ms=1000)  # back soon after the broker restart: it paces faults
        self.outcomes: list[Outcome] = []
        self.first: dict[str, Outcome] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "OutcomeReader":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=500)
            except Exception as exc:  # noqa: BLE001 - the broker is being restarted on purpose
                print(f"outcome reader: {type(exc).__name__}: {exc}", file=sys.stderr)
                time.sleep(1)
                continue
            for tp, messages in batches.items():
                for m in messages:
                    self._add(parse_outcome(tp.topic == self.verdict_topic, m.value))

    def _add(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            self.first.setdefault(outcome.ref_id, outcome)

    def done(self) -> int:
        with self._lock:
            return len(self.first)

    def caught_up(self) -> bool:
        """True when everything on both topics up to now has been read."""
        assigned = self.consumer.assignment()
        ends = self.consumer.end_offsets(list(assigned))
        return bool(assigned) and all(self.consumer.position(tp) >= end for tp, end in ends.items())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


# ------------------------------------------------------------------------------ logs
def read_log(inc: Incarnation) -> tuple[list[dict], list[str]]:
    """(JSON records, non-JSON lines). The last line of a process killed with -9 may be cut off
    mid-write by the kill: that one is not held against the logging."""
    text = inc.log_path.read_text(errors="replace")
    lines = text.splitlines()
    if inc.killed and lines and not text.endswith("\n"):
        lines = lines[:-1]
    records, other = [], []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            other.append(line)
    return records, other


EVENTS_OF_INTEREST = ("commit_dropped", "kafka_retry", "kafka_outage", "worker_failed",
                      "inference_failed", "cache_unavailable", "cache_recovered",
                      "partitions_revoked", "partitions_assigned", "drain_abandoned",
                      "drain_overran_grace_period", "intake_paused")


def analyse_logs(incarnations: list[Incarnation]) -> dict:
    lines = non_json = 0
    samples: list[str] = []
    membership_without_id: list[str] = []
    events: Counter = Counter()
    levels: Counter = Counter()
    for inc in incarnations:
        records, other = read_log(inc)
        lines += len(records) + len(other)
        non_json += len(other)
        samples += [f"{inc.slot}.{inc.number}: {line[:300]}" for line in other[:3]]
        for line in other:
            if "assign" in line.lower() or "revok" in line.lower():
                membership_without_id.append(f"{inc.slot}.{inc.number}: {line[:300]}")
        for record in records:
            event = str(record.get("event", ""))
            levels[str(record.get("level", "?"))] += 1
            if event in EVENTS_OF_INTEREST or record.get("logger", "").startswith("kafka"):
                events[event if event in EVENTS_OF_INTEREST else f"kafka-python: {event[:60]}"] += 1
            text = event.lower()
            if ("assign" in text or "revok" in text) and not record.get("worker_id"):
                membership_without_id.append(f"{inc.slot}.{inc.number}: {json.dumps(record)[:300]}")
    return {"lines": lines, "non_json_lines": non_json, "non_json_samples": samples[:10],
            "membership_lines_without_worker_id": len(membership_without_id),
            "membership_samples": membership_without_id[:5], "levels": dict(levels),
            "events": dict(events.most_common(25))}


# ------------------------------------------------------------------------------ figures
def stalls(t0: float, times: list[tuple[float, float]], end: float) -> list[tuple[float, float]]:
    """Every stretch with references waiting (produced, not finished) and none finishing, as
    (start relative to t0, seconds), longest first. `times`: (produced at, first outcome at, or
    inf if none came), epoch seconds; a reference never finished waits until `end`."""
    order = sorted(times, key=lambda pair: pair[1])
    oldest_waiting = [float("inf")] * (len(order) + 1)  # after the i-th completion
    for i in range(len(order) - 1, -1, -1):
        oldest_waiting[i] = min(order[i][0], oldest_waiting[i + 1])
    gaps, previous = [], t0
    for i, (_, done) in enumerate(order):
        done = min(done, end)
        start = max(previous, oldest_waiting[i])
        if done > start:
            gaps.append((round(start - t0, 1), round(done - start, 1)))
        previous = max(previous, done)
    return sorted(gaps, key=lambda g: -g[1])


def held_behind_slow(duplicated: set[str], placed: dict[str, tuple[int, int]],
                     first_at: dict[str, float], slow_ids: set[str]) -> int:
    """How many duplicated references were finished while a slow reference lower in the same
    partition was not: the partition's commit could not pass them, so a rebalance then (a kill,
    the broker outage) handed them to the next owner to redo. At-least-once, by design."""
    slow_by_partition: dict[int, list[tuple[int, float]]] = {}
    for ref_id in slow_ids:
        if ref_id in placed:
            partition, offset = placed[ref_id]
            done = first_at.get(ref_id, float("inf"))
            slow_by_partition.setdefault(partition, []).append((offset, done))
    count = 0
    for ref_id in duplicated:
        partition, offset = placed.get(ref_id, (-1, -1))
        done = first_at.get(ref_id, 0.0)
        if any(o < offset and d > done for o, d in slow_by_partition.get(partition, [])):
            count += 1
    return count


def environment_for_workers(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any FEATDISTILL_* of the caller's shell, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATDISTILL_")}
    return {**env, **extra}


SESSION_TIMEOUT_S = 10.0  # the worker's default: a killed member holds its partitions this long


def stall_report(refs, produced_at: dict[str, float], first_at: dict[str, float],
                 timeline: list[dict], t0: float, ended: float) -> dict:
    """The longest stalls of all references, and of the others: all but those that drip (slow
    by design: each takes a whole fetch deadline, restarted by every rebalance). A stall of the
    others is a stall of the group."""
    def times(keep) -> list[tuple[float, float]]:
        return [(produced_at[r.id], first_at.get(r.id, float("inf")))
                for r in refs if r.id in produced_at and keep(r)]

    gaps = stalls(t0, times(lambda r: True), ended)
    other_gaps = stalls(t0, times(lambda r: r.category != "drip"), ended)
    broker = [(f["at_s"], f["at_s"] + f["lasted_s"]) for f in timeline
              if f["fault"] == "broker outage"]
    outside = [g for g in other_gaps if not any(a < g[0] + g[1] and g[0] < b for a, b in broker)]
    longest = gaps[0] if gaps else (0.0, 0.0)
    return {
        "longest_s": longest[1], "from_s": longest[0],
        "during_faults": overlapping(longest, timeline),
        "waiting": waiting(longest, refs, produced_at, first_at, t0),
        "longest_others_s": other_gaps[0][1] if other_gaps else 0.0,
        "others_from_s": other_gaps[0][0] if other_gaps else 0.0,
        "others_during_faults": overlapping(other_gaps[0], timeline) if other_gaps else [],
        "longest_others_outside_broker_outage_s": outside[0][1] if outside else 0.0,
        "longest_five": gaps[:5], "longest_five_others": other_gaps[:5]}


def overlapping(gap: tuple[float, float], timeline: list[dict]) -> list[str]:
    """The faults under way during a gap: a kill counts until its session would time out (its
    partitions wait that long for the group to notice)."""
    start, length = gap
    return [f["fault"] for f in timeline
            if f["at_s"] <= start + length
            and start <= f["at_s"] + f["lasted_s"] + SESSION_TIMEOUT_S]


def waiting(gap: tuple[float, float], refs, produced_at: dict[str, float],
            first_at: dict[str, float], t0: float) -> dict:
    """The references produced and unfinished through a gap, by category."""
    end = t0 + gap[0] + gap[1] - 0.1  # the gap's figures are rounded to 0.1 s
    return dict(Counter(r.category for r in refs if produced_at.get(r.id, end) < end
                        and first_at.get(r.id, float("inf")) >= end))
