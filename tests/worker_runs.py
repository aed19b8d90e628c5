"""A run of the worker as a process against the real Kafka and Redis (deploy/local/services.sh):
one test's topics, consumer group, tiny bundle, images and worker processes, for the tests that
drive `featdistill worker` from outside (test_worker_services, test_worker_faults, test_scaling).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import make_image, write_tiny_bundle
from services import WorkerProcess, committed, create_topic, produce, read_topic, require_services, unique

MAX_BYTES = 300_000  # FEATDISTILL_FETCH_MAX_BYTES of every run's workers


@pytest.fixture
def services():
    return require_services()


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
