"""Why bench/fault_injection.py's stalls happened: each worker's /metrics sampled about once a
second, and the workers' JSON logs read for membership events, so that every gap longer than
GAP_S is split into what the group was doing meanwhile.

A gap is cut into 1 s slices and each slice gets the first label that applies:
  broker down           the broker outage fault (stopping, down, starting again);
  broker back, no group the broker is up again and nothing has come out nor been assigned since
                        (the clients' reconnect backoff, the coordinator loading the group);
  dripping only         the only references waiting drip a byte at a time: each ends at the
                        fetch deadline (a dead letter), by design;
  partitions unassigned a partition with references waiting was revoked and not yet assigned
                        again (a rebalance in progress: members rejoining, the new assignment);
  held by killed worker a partition with references waiting still belongs to a killed worker
                        (the group notices at its session timeout, or when its restart joins);
  replay                outcomes came, but all for references already finished: work whose commit
                        had not passed it (dropped with the membership, or behind a slow reference)
                        is redone before the new references of the partition are reached;
  redis down            the Redis outage fault, nothing above;
  busy                  partitions owned by live workers, nothing finishing (fetches, inference,
                        publish on a loaded CPU; the metrics' in_flight says what was held).
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from bisect import bisect_left, bisect_right
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.fault_observe import Incarnation, WorkerFleet, read_log, stalls

GAP_S = 5.0
SLICE_S = 1.0
MEMBERSHIP = ("partitions_assigned", "partitions_revoked")
NOTABLE = ("commit_dropped", "kafka_retry", "kafka_outage", "cache_unavailable", "cache_recovered",
           "drain_abandoned", "intake_paused", "worker_started")
# kafka-python's own lines worth a place in a gap's events: (text in the line, short name).
KAFKA_NOTABLE = (("Marking the coordinator dead", "kafka: coordinator lost"),
                 ("needs to re-join", "kafka: member unknown, rejoining"))


# ------------------------------------------------------------------------------ metrics
def parse_metrics(text: str) -> dict:
    """The few figures a stall needs from one /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"assigned": 0.0, "in_flight": 0.0, "messages": 0.0, "lag": 0.0, "cache_up": 1.0}
    names = {"featdistill_assigned_partitions": "assigned",
             "featdistill_in_flight_messages": "in_flight",
             "featdistill_messages_total": "messages", "featdistill_consumer_lag": "lag",
             "featdistill_cache_up": "cache_up"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = names.get(sample.name)
            if key in ("messages", "lag"):
                out[key] += sample.value
            elif key:
                out[key] = sample.value
    return out


def metrics_port(inc: Incarnation) -> int | None:
    """The port the worker bound (the bench asks for any: 0), from its worker_started line."""
    try:
        text = inc.log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if '"worker_started"' in line:
            try:
                return int(json.loads(line)["metrics_port"])
            except (ValueError, KeyError):
                return None
    return None


class MetricsSampler(threading.Thread):
    """Every SLICE_S, each live worker's /metrics; a worker not (yet) answering is a sample with
    up=False. Samples: dicts with t (epoch), worker ("w0.2") and parse_metrics' figures."""

    def __init__(self, fleet: WorkerFleet, every_s: float = SLICE_S) -> None:
        super().__init__(daemon=True)
        self.fleet, self.every_s = fleet, every_s
        self.samples: list[dict] = []
        self._ports: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.samples.append({"t": time.time(), "worker": "host", "up": False,
                                 "load1": os.getloadavg()[0]})  # the machine's own load
            for inc in list(self.fleet.current.values()):
                self.samples.append(self._sample(inc))

    def _sample(self, inc: Incarnation) -> dict:
        name = f"{inc.slot}.{inc.number}"
        port = self._ports.get(name) or metrics_port(inc)
        sample = {"t": time.time(), "worker": name, "up": False}
        if port is None:
            return sample
        self._ports[name] = port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.8) as r:
                sample.update(parse_metrics(r.read().decode()), up=True)
        except OSError:
            pass  # killed, or too busy to answer in time: recorded as not up
        return sample

    def stop(self, dump: Path | None = None) -> None:
        self._halt.set()  # not `_stop`: threading.Thread has a method of that name
        self.join(5)
        if dump is not None:
            dump.write_text("".join(json.dumps(s) + "\n" for s in self.samples))


# ------------------------------------------------------------------------------ logs
def log_events(incarnations: list[Incarnation]) -> list[dict]:
    """Membership and notable events of every incarnation, by time, plus when each one died:
    the next incarnation of its slot was started right after (a kill, or an exit)."""
    events = []
    for inc in incarnations:
        name = f"{inc.slot}.{inc.number}"
        records, _ = read_log(inc)
        for record in records:
            event = record.get("event")
            if str(record.get("logger", "")).startswith("kafka"):
                event = next((short for needle, short in KAFKA_NOTABLE if needle in str(event)),
                             None)
            if event in MEMBERSHIP or event in NOTABLE or event in dict(KAFKA_NOTABLE).values():
                at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
                parts = {p for _, p in record.get("partitions", [])}
                events.append({"t": at, "worker": name, "event": event, "partitions": parts})
    for inc in incarnations:
        after = [i for i in incarnations if i.slot == inc.slot and i.number == inc.number + 1]
        if after:
            events.append({"t": after[0].started, "worker": f"{inc.slot}.{inc.number}",
                           "event": "died", "partitions": set()})
    return sorted(events, key=lambda e: e["t"])


def owners_at(events: list[dict], t: float) -> tuple[dict[int, str | None], set[str]]:
    """Each partition's owner at t (None: revoked, not assigned again) and the dead workers."""
    owner: dict[int, str | None] = {}
    dead: set[str] = set()
    for e in events:
        if e["t"] > t:
            break
        if e["event"] == "partitions_assigned":
            owner.update({p: e["worker"] for p in e["partitions"]})
        elif e["event"] == "partitions_revoked":  # a rebalance: a dead member's go back too
            owner.update({p: None for p, w in owner.items()
                          if w in dead or (p in e["partitions"] and w == e["worker"])})
        elif e["event"] == "died":
            dead.add(e["worker"])
    return owner, dead


# ------------------------------------------------------------------------------ gaps
def explain_gaps(refs, produced_at: dict, placed: dict, outcomes: list, faults: list[dict],
                 incarnations: list[Incarnation], samples: list[dict], t0: float, end: float,
                 only_others: bool) -> list[dict]:
    """Every gap longer than GAP_S (of all references, or of all but the dripping ones), with
    its slices' labels summed, the events inside it and the workers' metrics through it."""
    keep = [r for r in refs if r.id in produced_at and (not only_others or r.category != "drip")]
    first: dict[str, float] = {}
    for o in sorted(outcomes, key=lambda o: o.at):
        first.setdefault(o.ref_id, o.at)
    gaps = [g for g in stalls(t0, [(produced_at[r.id], first.get(r.id, float("inf")))
                                   for r in keep], end) if g[1] > GAP_S]
    events = log_events(incarnations)
    repeat_times = sorted(o.at for o in outcomes if o.at > first.get(o.ref_id, o.at))
    windows = {name: [(t0 + f["at_s"], t0 + f["at_s"] + f["lasted_s"]) for f in faults
                      if f["fault"] == name] for name in ("broker outage", "redis outage")}
    outcome_times = sorted(o.at for o in outcomes)
    windows["broker back"] = [(y, min(next((e["t"] for e in events if e["t"] > y
                                            and e["event"] == "partitions_assigned"), end),
                                      next((t for t in outcome_times if t > y), end)))
                              for _, y in windows["broker outage"]]
    out = []
    for start_s, length in sorted(gaps):
        a, b = t0 + start_s, t0 + start_s + length
        labels: Counter = Counter()
        t = a
        while t < b:
            step = min(SLICE_S, b - t)
            waiting = [r for r in keep if r.id in placed
                       and produced_at[r.id] <= t and first.get(r.id, float("inf")) > t]
            replayed = bisect_right(repeat_times, t + step) - bisect_left(repeat_times, t)
            labels["dripping only" if all(r.category == "drip" for r in waiting) else
                   slice_label(t, {placed[r.id][0] for r in waiting}, replayed, events,
                               windows)] += step
            t += step
        out.append({"from_s": start_s, "seconds": length,
                    "cause": cause_of(labels, length),
                    "slices_s": {k: round(v, 1) for k, v in labels.most_common()},
                    "duplicate_outcomes": bisect_right(repeat_times, b)
                    - bisect_left(repeat_times, a),
                    "events": events_in(events, a, b, t0),
                    "metrics": metrics_in(samples, a, b)})
    return out


def explain_run(*args) -> dict:
    """explain_gaps of all references and of all but the dripping ones; an error here is
    reported in the results rather than losing the run's other figures."""
    try:
        return {key: explain_gaps(*args, only_others=others)
                for key, others in (("gaps", False), ("gaps_others", True))}
    except Exception as exc:  # noqa: BLE001 - the run's own figures matter more
        return {"gaps": [], "gaps_others": [], "gaps_error": f"{type(exc).__name__}: {exc}"}


def slice_label(t: float, waiting: set[int], replayed: int, events: list[dict],
                windows: dict) -> str:
    if any(x <= t < y for x, y in windows["broker outage"]):
        return "broker down"
    if any(x <= t < y for x, y in windows["broker back"]):
        return "broker back, no group"
    owner, dead = owners_at(events, t)
    if any(owner.get(p) is None for p in waiting):
        return "partitions unassigned"
    if any(owner.get(p) in dead for p in waiting):
        return "held by killed worker"
    if replayed:
        return "replay"
    if any(x <= t < y for x, y in windows["redis outage"]):
        return "redis down"
    return "busy"


def cause_of(labels: Counter, length: float) -> str:
    """The labels covering at least a quarter of the gap, largest first, in words."""
    words = {"broker down": "broker outage", "partitions unassigned": "rebalance wait",
             "broker back, no group": "broker back, workers not yet rejoined",
             "held by killed worker": "killed worker's partitions held until the group noticed",
             "replay": "replay of work whose commit had not passed it",
             "redis down": "Redis outage", "busy": "workers busy (loaded CPU), nothing finishing",
             "dripping only": "only dripping references waiting (fetch deadline)"}
    main = [words[k] for k, v in labels.most_common() if v >= 0.25 * length]
    return " + ".join(main) or words[labels.most_common(1)[0][0]]


def events_in(events: list[dict], a: float, b: float, t0: float) -> list[str]:
    """The membership and notable events from 2 s before the gap to its end, as short lines."""
    lines = []
    for e in events:
        if a - 2 <= e["t"] <= b:
            parts = f" {sorted(e['partitions'])}" if e["partitions"] else ""
            lines.append(f"{e['t'] - t0:.1f} {e['worker']} {e['event']}{parts}")
    if len(lines) > 40:  # kafka_retry lines repeat through an outage
        lines = lines[:20] + [f"... {len(lines) - 40} more ..."] + lines[-20:]
    return lines


def metrics_in(samples: list[dict], a: float, b: float) -> dict:
    """Per worker through the gap: samples answered/taken, messages handled (all outcomes,
    duplicates included), the most held in flight, the partitions reported owned."""
    by_worker: dict[str, list[dict]] = {}
    for s in samples:
        if a <= s["t"] <= b:
            by_worker.setdefault(s["worker"], []).append(s)
    host = by_worker.pop("host", [])
    out: dict = {"load1_max": round(max(s["load1"] for s in host), 1)} if host else {}
    for worker, got in sorted(by_worker.items()):
        up = [s for s in got if s["up"]]
        out[worker] = {"answered": f"{len(up)}/{len(got)}"}
        if up:
            out[worker].update(messages=int(up[-1]["messages"] - up[0]["messages"]),
                               max_in_flight=int(max(s["in_flight"] for s in up)),
                               assigned=sorted({int(s["assigned"]) for s in up}),
                               max_lag=int(max(s["lag"] for s in up)))
    return out


def print_gaps(run: dict) -> None:
    """One line per gap longer than GAP_S: when, how long, the cause, the slices' labels."""
    print(f"gaps over {GAP_S:.0f} s (* a gap of the references other than the dripping ones):")
    others = {(g["from_s"], g["seconds"]) for g in run["gaps_others"]}
    in_all = {(g["from_s"], g["seconds"]) for g in run["gaps"]}
    alone = [g for g in run["gaps_others"] if (g["from_s"], g["seconds"]) not in in_all]
    for g in sorted(run["gaps"] + alone, key=lambda g: g["from_s"]):
        mark = "*" if (g["from_s"], g["seconds"]) in others else " "
        print(f" {mark}{g['from_s']:>7.1f} +{g['seconds']:>5.1f} s  {g['cause']}  "
              f"{g['slices_s']}  dup outcomes {g['duplicate_outcomes']}")
