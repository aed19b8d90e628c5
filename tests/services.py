"""Helpers for tests against the real Kafka and Redis started by deploy/local/services.sh.

Under CI the services must be there: a missing one fails the test instead of skipping it.
Every Kafka helper takes `security` (default: PLAINTEXT), for the secured listeners of
`services.sh start --secure` (see `require_secure_services`).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from worker.adapters.kafka_security import KafkaSecurity, client_options

PLAIN = KafkaSecurity()

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "deploy" / "local" / "services.sh"


def require_services() -> tuple[str, str]:
    bootstrap = os.environ.get("FEATDISTILL_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("FEATDISTILL_REDIS_URL")
    if bootstrap and redis_url:
        return bootstrap, redis_url
    message = ("Kafka/Redis not configured: run the suite through scripts/test.sh, which starts "
               "them with deploy/local/services.sh and exports FEATDISTILL_KAFKA_BOOTSTRAP and "
               "FEATDISTILL_REDIS_URL")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class SecureServices:
    """The secured listeners of `services.sh start --secure` and the files it made for them."""
    kafka_sasl_ssl: str  # bootstrap of the SASL_SSL listener (SCRAM-SHA-256/512 and PLAIN)
    kafka_mtls: str  # bootstrap of the SSL listener that requires a client certificate
    redis_tls_url: str  # rediss:// URL (ACL user below, or the password-less default user)
    folder: Path  # ca.crt, other-ca.crt, client.crt/.key, kafka.password, redis.password
    username: str = "featdistill"

    def kafka_password(self) -> str:
        return (self.folder / "kafka.password").read_text().strip()

    def sasl_ssl(self, mechanism: str = "SCRAM-SHA-512", **changes) -> KafkaSecurity:
        return replace(KafkaSecurity("SASL_SSL", mechanism, self.username, self.kafka_password(),
                                     ca_file=str(self.folder / "ca.crt")), **changes)


def require_secure_services() -> SecureServices:
    names = ["FEATDISTILL_LOCAL_KAFKA_SASL_SSL", "FEATDISTILL_LOCAL_KAFKA_MTLS",
             "FEATDISTILL_LOCAL_REDIS_TLS", "FEATDISTILL_LOCAL_SECURE_DIR"]
    values = [os.environ.get(n) for n in names]
    if all(values):
        return SecureServices(*values[:3], Path(values[3]))
    message = ("secured Kafka/Redis not running: 'bash deploy/local/services.sh start --secure', "
               "then eval \"$(bash deploy/local/services.sh env)\" (sets " + ", ".join(names) + ")")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, topic: str, partitions: int, security: KafkaSecurity = PLAIN) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
            security: KafkaSecurity = PLAIN) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             **client_options(security))
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0,
               security: KafkaSecurity = PLAIN) -> list[dict]:
    """Every JSON message on the topic, waiting until at least `expect` have arrived."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000,
                             **client_options(security))
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:  # read what is there (until a second of silence), then wait for more
            for message in consumer:
                out.append(json.loads(message.value))
            if len(out) >= expect or time.monotonic() >= deadline:
                break
    finally:
        consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int,
              security: KafkaSecurity = PLAIN) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             **client_options(security))
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int,
                security: KafkaSecurity = PLAIN) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **client_options(security))
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


class WorkerProcess:
    """`featdistill worker` as a real subprocess, configured through the environment.

    FEATDISTILL_METRICS_PORT=0 (the default here) lets the worker bind any free port, read back
    from its `worker_started` log line: no port is picked early and lost to someone else.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log_start = self._log.tell()  # an earlier worker's lines may precede ours
        # PYTHONFAULTHANDLER: a worker that will not stop is sent SIGABRT and logs its threads.
        # OMP_NUM_THREADS: tests run several workers on a small machine; with a thread per core
        # each, their OpenMP pools spin against one another (4x slower inference on 2 cores).
        env = {"FEATDISTILL_METRICS_PORT": "0", "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1",
               **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shell.cli", "worker"],
            env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self._metrics_port = int(env["FEATDISTILL_METRICS_PORT"]) or None

    @property
    def metrics_port(self) -> int:
        if self._metrics_port is None:
            self._metrics_port = self._logged_metrics_port()
        if self._metrics_port is None:
            raise AssertionError(f"the worker has not logged its metrics port yet:\n{self.log()}")
        return self._metrics_port

    def _logged_metrics_port(self) -> int | None:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            if "worker_started" in line:  # a JSON or a console log line
                found = re.search(r'metrics_port"?[=:] *(\d+)', line)
                return int(found.group(1)) if found else None
        return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def handled(self) -> float:
        text = self.metrics()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("featdistill_messages_total{"))

    def wait_handled(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until the worker has produced `count` results (read from its metrics, fast)."""
        deadline = time.monotonic() + timeout_s
        while self.handled() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} handled:\n{self.log()}")
            time.sleep(0.02)

    def wait_ready(self, timeout_s: float = 180.0) -> None:  # a loaded 2-core box: 30-80 s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()}")
            self._metrics_port = self._metrics_port or self._logged_metrics_port()
            if self._metrics_port is None:
                time.sleep(0.3)  # still loading the bundle or joining Kafka
                continue
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log()}")

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(30)
            raise AssertionError(f"worker still running {timeout_s}s after SIGTERM; where its "
                                 f"threads were:\n{self.log(20_000)}") from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def log(self, tail: int = 5000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def free_port() -> int:
    """A port free now, for a server that cannot bind port 0 itself (someone may take it before
    the server binds it: prefer port 0 and ask the server which port it got)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_services(command: str) -> None:
    # The Redis the tests use (FEATDISTILL_REDIS_URL), whatever services.sh recorded or was told.
    port = urllib.parse.urlsplit(os.environ["FEATDISTILL_REDIS_URL"]).port
    done = subprocess.run(["bash", str(SERVICES), command], capture_output=True, text=True,
                          env={**os.environ, "FEATDISTILL_REDIS_PORT": str(port)})
    if done.returncode != 0:
        raise AssertionError(f"services.sh {command} failed:\n{done.stderr}")


def stop_redis() -> None:
    _redis_services("stop-redis")


def start_redis() -> None:
    _redis_services("start-redis")
