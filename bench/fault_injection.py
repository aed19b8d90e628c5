"""Fault injection: three real workers, real Kafka and Redis, and the faults of issue 12's run.

    nice python bench/fault_injection.py                 # 2,000 references, one run
    nice python bench/fault_injection.py --runs 5        # five runs, all in one JSON
    nice python bench/fault_injection.py --refs 10000    # issue 12's size

Each run starts this checkout's Kafka and Redis (deploy/local/services.sh) if they are not up,
a local image server on 127.0.0.2 (the only host the workers allow) and a canary on 127.0.0.1;
builds a tiny random bundle; creates fresh topics (the input with --partitions partitions);
starts --workers `featdistill worker` processes in one consumer group with JSON logs to files;
then produces the references at a steady rate over --produce-s (150 s), each with the outcome
it must get:
  - good images (a pool, so repeats are cache hits or in-flight twins): a verdict;
  - a few slow images (about 3 s each): a verdict;
  - a few that drip a byte every 2 s: a fetch_timeout dead letter at the fetch deadline;
  - poison (--poison, 5 %), every form in turn: not JSON, no uri, a tombstone, not an image, a
    truncated JPEG, a pixel bomb, a declared 64 MB body, 404, 503, a redirect to the canary, and
    SSRF forms aimed at the canary and internal addresses: each its own dead letter.
Meanwhile it injects, at 10, 25, 40, 55 and 75 % of the production time (each at least 5 s
after the last fault ended): kill -9 of w0 (restarted at once), a 10 s Redis outage, kill -9 of
w1, a 15 s broker outage (stopped and restarted with its data), kill -9 of w2. Workers that
die otherwise are restarted too, and counted. It waits until every reference has an outcome or
--deadline-s passes, stops the workers with SIGTERM, and reports lost references, wrong
outcomes, duplicates (at-least-once allows them: counted, not failed), exits other than the
kills (with their last log lines), canary hits, non-JSON log lines, assignment/revocation lines
without worker_id, the longest stall (references produced and waiting, none finishing; also
without the dripping references, and outside the broker outage) and refs/s (it cannot pass the
offered rate, --refs / --produce-s); each gap over 5 s is cut into what the group was doing
(bench/fault_explain.py: each worker's /metrics every second, the membership lines of the logs).
Results: bench/results/fault-injection.json (--out); metrics.jsonl beside the workers' logs.
Exit status 1 if any run lost a reference, got a wrong outcome, had a worker exit on its own or
a canary hit.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fault_explain import MetricsSampler, explain_run, print_gaps  # noqa: E402
from bench.fault_fixtures import Canary, ImageServer, build_references, make_jpeg  # noqa: E402
from bench.fault_observe import (OutcomeReader, WorkerFleet, analyse_logs,  # noqa: E402
                                 environment_for_workers, held_behind_slow, stall_report)

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "deploy" / "local" / "services.sh"
RESULTS = ROOT / "bench" / "results" / "fault-injection.json"
REDIS_OUTAGE_S, BROKER_OUTAGE_S = 10.0, 15.0
# (share of the production time, fault): one worker killed at a time, each fault at least
# FAULT_GAP_S after the last one ended, all while references arrive. References are produced at
# a steady rate over --produce-s, so every fault meets a flowing stream however fast the
# machine is (2,000 produced at once are done in about 20 s on a 2-core machine, before the
# faults could be spread out).
FAULTS = ((0.10, "kill w0"), (0.25, "redis outage"), (0.40, "kill w1"),
          (0.55, "broker outage"), (0.75, "kill w2"))
FAULT_GAP_S = 5.0


def services(*args: str) -> None:
    done = subprocess.run(["bash", str(SERVICES), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"services.sh {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def service_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(SERVICES), "env"], capture_output=True, text=True,
                         check=True).stdout
    pairs = (line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: v for k, v in pairs}


class Injector(threading.Thread):
    """Runs the faults in order, each at its share of the production time; a fault whose turn
    never comes (the run finished first) is recorded as skipped."""

    def __init__(self, fleet: WorkerFleet, reader: OutcomeReader, span_s: float, t0: float,
                 finished: threading.Event, faults=FAULTS) -> None:
        super().__init__(daemon=True)
        self.fleet, self.reader, self.span_s, self.t0 = fleet, reader, span_s, t0
        self.finished, self.faults = finished, faults
        self.timeline: list[dict] = []
        self.skipped: list[str] = []

    def run(self) -> None:
        not_before = 0.0
        for share, name in self.faults:
            while (time.time() < max(self.t0 + share * self.span_s, not_before)
                   and not self.finished.is_set()):
                time.sleep(0.2)
            if self.finished.is_set():
                self.skipped.append(name)
                continue
            started, progress = time.time(), self.reader.done()
            note = self._inject(name)
            self.timeline.append({"fault": name, "at_s": round(started - self.t0, 1),
                                  "finished_refs_then": progress,
                                  "lasted_s": round(time.time() - started, 1), **note})
            not_before = time.time() + FAULT_GAP_S

    def _inject(self, name: str) -> dict:
        if name.startswith("kill "):
            self.fleet.kill_and_restart(name.split()[1])
            return {}
        if name == "redis outage":
            services("stop-redis")
            time.sleep(REDIS_OUTAGE_S)
            services("start-redis")
            return {"down_s": REDIS_OUTAGE_S}
        t_stop = time.time()
        services("stop-kafka", "--keep-data")  # a controlled shutdown: a few seconds
        stopped = time.time()
        time.sleep(BROKER_OUTAGE_S)
        services("start-kafka")
        return {"stopping_s": round(stopped - t_stop, 1), "down_s": round(time.time() - stopped, 1)}


def build_bundle(out: Path, version: str) -> Path:
    """The tiny random bundle the tests use (tests/conftest.py: seed 0, preset tiny), through the
    CLI so that this process never loads torch."""
    subprocess.run([sys.executable, "-m", "shell.cli", "bundle", "init", "--preset", "tiny",
                    "--seed", "0", "--version", version, "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    return out


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        admin.close()


class Producer(threading.Thread):
    """Every reference, keyed by its id, at a steady rate over `span_s` from t0, through the
    broker outage (the producer buffers and retries). Records when each was sent and where it
    landed: id -> (partition, offset)."""

    def __init__(self, bootstrap: str, topic: str, refs, t0: float, span_s: float) -> None:
        super().__init__(daemon=True)
        self.args = bootstrap, topic, refs, t0, span_s
        self.produced_at: dict[str, float] = {}
        self.placed: dict[str, tuple[int, int]] = {}
        self.failed: list[str] = []

    def run(self) -> None:
        from kafka import KafkaProducer

        bootstrap, topic, refs, t0, span_s = self.args
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                 delivery_timeout_ms=600_000, max_block_ms=600_000)
        sent = []
        for i, ref in enumerate(refs):
            time.sleep(max(0.0, t0 + span_s * i / len(refs) - time.time()))
            self.produced_at[ref.id] = time.time()
            sent.append((ref.id, producer.send(topic, key=ref.id.encode(), value=ref.value)))
        producer.flush()
        for ref_id, future in sent:
            try:
                meta = future.get(60)
                self.placed[ref_id] = (meta.partition, meta.offset)
            except Exception:  # noqa: BLE001 - counted: such a reference was never offered
                self.failed.append(ref_id)
        producer.close()


def wait_for_group(fleet: WorkerFleet, partitions: int, timeout_s: float) -> None:
    """Until every worker's latest assignment is non-empty and together they hold them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.check(time.time())
        held = []
        for inc in fleet.current.values():
            lines = [json.loads(line) for line in inc.log_path.read_text(errors="replace")
                     .splitlines() if '"partitions_assigned"' in line]
            held.append(len(lines[-1]["partitions"]) if lines else 0)
        if all(held) and sum(held) == partitions:
            return
        time.sleep(1)
    raise RuntimeError(f"the workers did not share the {partitions} partitions in {timeout_s} s")


def run_once(args: argparse.Namespace, index: int, env: dict[str, str], work: Path) -> dict:
    run = f"{index}-{uuid.uuid4().hex[:6]}"
    names = {"input": f"fi-refs-{run}", "verdicts": f"fi-verdicts-{run}",
             "dead": f"fi-dead-{run}", "group": f"fi-group-{run}"}
    canary = Canary().start()
    server = ImageServer([make_jpeg(args.seed * 100_000 + i) for i in range(args.pool)],
                         canary.port).start()
    refs = build_references(args.refs, args.poison, server.base, canary.port, args.pool,
                            seed=args.seed + index)
    bootstrap = env["FEATDISTILL_KAFKA_BOOTSTRAP"]
    create_topics(bootstrap, {names["input"]: args.partitions, names["verdicts"]: 1,
                              names["dead"]: 1})
    log_dir = work / f"run-{run}"
    log_dir.mkdir(parents=True)
    fleet = WorkerFleet(environment_for_workers({
        **env, "FEATDISTILL_BUNDLE": str(build_bundle(log_dir / "bundle", f"fault-{run}")),
        "FEATDISTILL_DEVICE": "cpu", "FEATDISTILL_GROUP_ID": names["group"],
        "FEATDISTILL_INPUT_TOPIC": names["input"], "FEATDISTILL_VERDICT_TOPIC": names["verdicts"],
        "FEATDISTILL_DEAD_LETTER_TOPIC": names["dead"],
        "FEATDISTILL_ALLOW_HOSTS": '["127.0.0.2/32"]', "FEATDISTILL_METRICS_PORT": "0",
        "FEATDISTILL_LOG_FORMAT": "json", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }), log_dir, args.workers)
    reader = OutcomeReader(bootstrap, names["verdicts"], names["dead"]).start()
    finished = threading.Event()
    injector = None
    sampler = MetricsSampler(fleet)
    try:
        fleet.start_all()
        sampler.start()
        wait_for_group(fleet, args.partitions, args.start_timeout_s)
        t0 = time.time()
        producer = Producer(bootstrap, names["input"], refs, t0, args.produce_s)
        producer.start()
        injector = Injector(fleet, reader, args.produce_s, t0, finished,
                            () if args.no_faults else FAULTS)
        injector.start()
        deadline = t0 + args.produce_s + args.deadline_s
        while reader.done() < len(refs) and time.time() < deadline:
            fleet.check(t0)
            time.sleep(0.5)
        finished.set()
        injector.join()  # a fault under way is finished: the services come back
        producer.join()
        ended = time.time()
        fleet.check(t0)
        fleet.stop_all(t0)
        catch_up = time.monotonic() + 60
        while not reader.caught_up() and time.monotonic() < catch_up:
            time.sleep(0.5)
    finally:
        finished.set()
        sampler.stop(log_dir / "metrics.jsonl")
        if fleet.current:  # an error above: no drain wanted, just no workers left behind
            fleet.stop_all(time.time(), timeout_s=30)
        reader.stop()
        server.stop()
        canary.stop()
    report = summarise(refs, producer, reader, fleet, injector, canary, t0, ended, sampler)
    report.update(run=run, logs_dir=str(log_dir), image_server_requests=server.requests)
    return report


def summarise(refs, producer: Producer, reader: OutcomeReader, fleet: WorkerFleet,
              injector: Injector, canary: Canary, t0: float, ended: float,
              sampler: MetricsSampler) -> dict:
    expected = {r.id: r for r in refs}
    seen = Counter(o.ref_id for o in reader.outcomes)
    lost = [r for r in refs if r.id not in seen and r.id not in producer.failed]
    wrong = {}
    for o in reader.outcomes:
        ref = expected.get(o.ref_id)
        if ref is None or o.outcome not in ref.expected:
            wrong.setdefault(o.ref_id, {"id": o.ref_id, "category": ref.category if ref else None,
                                        "expected": sorted(ref.expected) if ref else None,
                                        "got": o.outcome, "worker": o.worker})
    first_at = {ref_id: o.at for ref_id, o in reader.first.items()}
    last = max(first_at.values(), default=ended)
    duplicated = {ref_id for ref_id, n in seen.items() if n > 1}
    slow_ids = {r.id for r in refs if r.category in ("drip", "slow")}
    by_category = Counter(f"{r.category} -> {reader.first[r.id].outcome}" if r.id in reader.first
                          else f"{r.category} -> lost" for r in refs)
    return {
        "refs": len(refs), "not_produced": len(producer.failed), "seconds": round(last - t0, 1),
        "refs_per_s": round(len(first_at) / max(last - t0, 1e-9), 1),
        "lost": len(lost),
        "lost_samples": [{"id": r.id, "category": r.category} for r in lost[:10]],
        "wrong_outcomes": len(wrong), "wrong_samples": list(wrong.values())[:10],
        "duplicates": sum(seen.values()) - len(seen), "duplicated_refs": len(duplicated),
        "duplicated_refs_held_behind_slow": held_behind_slow(duplicated, producer.placed,
                                                             first_at, slow_ids),
        "unexpected_exits": len(fleet.unexpected_exits), "exits": fleet.unexpected_exits,
        "kills": sum(1 for i in fleet.all if i.killed),
        "canary_hits": len(canary.hits),
        "stall": stall_report(refs, producer.produced_at, first_at, injector.timeline, t0, ended),
        "faults": injector.timeline, "faults_skipped": injector.skipped,
        "outcomes_by_category": dict(sorted(by_category.items())),
        "logs": analyse_logs(fleet.all),
        **explain_run(refs, producer.produced_at, producer.placed, reader.outcomes,
                      injector.timeline, fleet.all, sampler.samples, t0, ended),
    }


def print_table(runs: list[dict]) -> None:
    print(f"{'run':<10}{'refs/s':>7}{'lost':>5}{'wrong':>6}{'dups':>6}{'exits':>6}{'canary':>7}"
          f"{'non-JSON':>9}{'no w_id':>8}{'stall':>6}{'others':>7}{'else':>6}"
          "  longest stall: waiting")
    for r in runs:
        stall = r["stall"]
        kinds = Counter()
        for category, n in stall["waiting"].items():
            kinds[category if category in ("good", "slow", "drip") else "poison"] += n
        note = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "-"
        if r["faults_skipped"]:
            note += f"  (faults skipped: {', '.join(r['faults_skipped'])})"
        print(f"{r['run']:<10}{r['refs_per_s']:>7}{r['lost']:>5}{r['wrong_outcomes']:>6}"
              f"{r['duplicates']:>6}{r['unexpected_exits']:>6}{r['canary_hits']:>7}"
              f"{r['logs']['non_json_lines']:>9}"
              f"{r['logs']['membership_lines_without_worker_id']:>8}"
              f"{stall['longest_s']:>6}{stall['longest_others_s']:>7}"
              f"{stall['longest_others_outside_broker_outage_s']:>6}  {note}")
    print("dups: outcomes beyond one per reference (at-least-once). stall (s): the longest time "
          "with references waiting and none finishing; others: the same without the dripping "
          "references; else: others outside the broker outage.")


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(), "commit": commit}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--refs", type=int, default=2000, help="references per run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6, help="of the input topic")
    parser.add_argument("--poison", type=float, default=0.05, help="share of poison references")
    parser.add_argument("--pool", type=int, default=300, help="distinct good images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--produce-s", type=float, default=150,
                        help="references are produced at a steady rate over this long")
    parser.add_argument("--deadline-s", type=float, default=600,
                        help="wait at most this long for outcomes after the last is produced")
    parser.add_argument("--start-timeout-s", type=float, default=400, help="workers joining")
    parser.add_argument("--no-faults", action="store_true", help="a baseline run: no faults")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python's reconnect chatter in the bench
    # SIGTERM unwinds like Ctrl-C: the workers (own sessions) and the services are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    was_up = subprocess.run(["bash", str(SERVICES), "status"], capture_output=True).returncode == 0
    if not was_up:
        services("start")
    work = Path(tempfile.mkdtemp(prefix="fd-faults-"))
    info = machine()
    runs = []
    try:
        for index in range(args.runs):
            runs.append(run_once(args, index, service_env(), work))
            print_table(runs[-1:])
            print_gaps(runs[-1])
    finally:
        if not was_up:
            services("stop")
    info["load_average_at_end"] = os.getloadavg()
    payload = {"machine": info, "config": {
        "refs": args.refs, "workers": args.workers, "partitions": args.partitions,
        "poison_share": args.poison, "pool": args.pool, "seed": args.seed,
        "produce_s": args.produce_s, "offered_refs_per_s": round(args.refs / args.produce_s, 1),
        "faults": [] if args.no_faults else [f"{name} at {share:.0%} of the production time"
                                             for share, name in FAULTS],
        "redis_outage_s": REDIS_OUTAGE_S, "broker_outage_s": BROKER_OUTAGE_S}, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print_table(runs)
    print(f"wrote {args.out}; worker logs under {work}")
    clean = all(r["lost"] == r["wrong_outcomes"] == r["unexpected_exits"] == r["canary_hits"] == 0
                for r in runs)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
