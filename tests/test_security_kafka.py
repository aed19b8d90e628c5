"""The worker on the secured broker and Redis of `services.sh start --secure`: SASL_SSL end to end
(with Redis over TLS as an ACL user), mTLS, and refusals that end the worker with one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from worker.adapters.kafka_probe import probe
from worker.adapters.kafka_security import KafkaRefused, KafkaSecurity

from conftest import make_image, write_tiny_bundle
from services import (
    ROOT, WorkerProcess, create_topic, produce, read_topic, require_secure_services, unique,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]
# A bound, not a timing: a refusal must end the worker long before a broker outage
# (FEATDISTILL_KAFKA_OUTAGE_S below) would; past this the test fails instead of hanging.
REFUSAL_BOUND_S = 240


@pytest.fixture
def secure():
    return require_secure_services()


def security_env(sec: KafkaSecurity, password_file: Path | None = None) -> dict[str, str]:
    """The FEATDISTILL_KAFKA_* variables that say `sec` (the password as a file, if given)."""
    env = {"FEATDISTILL_KAFKA_SECURITY_PROTOCOL": sec.protocol,
           "FEATDISTILL_KAFKA_SSL_CHECK_HOSTNAME": str(sec.check_hostname).lower()}
    if sec.sasl:
        env |= {"FEATDISTILL_KAFKA_SASL_MECHANISM": sec.sasl_mechanism,
                "FEATDISTILL_KAFKA_SASL_USERNAME": sec.username}
        if password_file:
            password_file.write_text(sec.password + "\n")  # as a mounted Secret: newline and all
            env["FEATDISTILL_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
        else:
            env["FEATDISTILL_KAFKA_SASL_PASSWORD"] = sec.password
    for name, value in (("CA", sec.ca_file), ("CERT", sec.cert_file), ("KEY", sec.key_file)):
        if value:
            env[f"FEATDISTILL_KAFKA_{name}_FILE"] = value
    return env


def worker_env(tmp_path: Path, bootstrap: str, redis_url: str, topics: dict[str, str]) -> dict:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    return {
        "FEATDISTILL_BUNDLE": str(write_tiny_bundle(tmp_path / "bundle", version=unique("tiny"))),
        "FEATDISTILL_DEVICE": "cpu", "FEATDISTILL_KAFKA_BOOTSTRAP": bootstrap,
        "FEATDISTILL_REDIS_URL": redis_url, "FEATDISTILL_GROUP_ID": unique("group"),
        "FEATDISTILL_INPUT_TOPIC": topics["in"], "FEATDISTILL_VERDICT_TOPIC": topics["out"],
        "FEATDISTILL_DEAD_LETTER_TOPIC": topics["dead"],
        "FEATDISTILL_FILE_ROOTS": json.dumps([str(images)]), "FEATDISTILL_LOG_FORMAT": "json",
        "FEATDISTILL_SESSION_TIMEOUT_MS": "6000", "FEATDISTILL_HEARTBEAT_INTERVAL_MS": "1000",
        "FEATDISTILL_MAX_WAIT_MS": "20", "FEATDISTILL_WORKER_ID": "secure-worker",
    }


def test_worker_judges_through_sasl_ssl_with_redis_over_tls(tmp_path, secure):
    sec = secure.sasl_ssl("SCRAM-SHA-512")
    topics = {"in": unique("refs"), "out": unique("verdicts"), "dead": unique("dead")}
    for topic in topics.values():
        create_topic(secure.kafka_sasl_ssl, topic, 1, security=sec)
    env = worker_env(tmp_path, secure.kafka_sasl_ssl, secure.redis_tls_url, topics)
    env |= security_env(sec, password_file=tmp_path / "kafka-password")
    env |= {"FEATDISTILL_REDIS_USERNAME": secure.username,
            "FEATDISTILL_REDIS_PASSWORD_FILE": str(secure.folder / "redis.password"),
            "FEATDISTILL_REDIS_CA_FILE": str(secure.folder / "ca.crt")}
    refs = []
    for i in range(4):
        path = tmp_path / "images" / f"img{i}.png"
        make_image(48, 48, seed=i).save(path)
        refs.append((f"m{i}".encode(), json.dumps({"id": f"m{i}", "uri": path.as_uri()}).encode()))
    again = {"id": "again", "uri": (tmp_path / "images" / "img0.png").as_uri()}
    refs.append((b"again", json.dumps(again).encode()))  # m0's image: a cache hit, once m0 is done
    produce(secure.kafka_sasl_ssl, topics["in"], refs[:4], security=sec)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        assert len(read_topic(secure.kafka_sasl_ssl, topics["out"], 4, security=sec)) >= 4
        produce(secure.kafka_sasl_ssl, topics["in"], refs[4:], security=sec)
        verdicts = read_topic(secure.kafka_sasl_ssl, topics["out"], 5, security=sec)
        assert {v["id"] for v in verdicts} == {"m0", "m1", "m2", "m3", "again"}, worker.log()
        assert [v["cached"] for v in verdicts if v["id"] == "again"] == [True]  # Redis over TLS
        assert worker.metric("featdistill_cache_up") == 1
        assert worker.terminate() == 0
    finally:
        worker.close()
    assert sec.password not in worker.log_path.read_text()  # the password file is read, never logged


def _mtls(folder):
    """The client side of the local mTLS listener: our CA, the client certificate and key."""
    return KafkaSecurity("SSL", ca_file=str(folder / "ca.crt"), cert_file=str(folder / "client.crt"),
                         key_file=str(folder / "client.key"))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_other_sasl_mechanisms_round_trip(secure, mechanism):
    sec = secure.sasl_ssl(mechanism)
    topic = unique("mech")
    create_topic(secure.kafka_sasl_ssl, topic, 1, security=sec)
    produce(secure.kafka_sasl_ssl, topic, [(b"k", b'{"n": 1}')], security=sec)
    assert read_topic(secure.kafka_sasl_ssl, topic, 1, security=sec) == [{"n": 1}]


def test_mtls_client_certificate_round_trip(secure):
    sec = _mtls(secure.folder)
    topic = unique("mtls")
    create_topic(secure.kafka_mtls, topic, 1, security=sec)
    produce(secure.kafka_mtls, topic, [(b"k", b'{"n": 2}')], security=sec)
    assert read_topic(secure.kafka_mtls, topic, 1, security=sec) == [{"n": 2}]


def test_probe_names_each_refusal_and_passes_what_is_right(secure):
    mtls = _mtls(secure.folder)
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
        probe(secure.kafka_sasl_ssl, secure.sasl_ssl(mechanism))
    probe(secure.kafka_mtls, mtls)
    probe("127.0.0.1:1", secure.sasl_ssl())  # nothing listening: an outage, not a refusal
    refusals = {
        "SASL authentication failed": (secure.kafka_sasl_ssl, secure.sasl_ssl("PLAIN", password="x")),
        "TLS certificate not trusted": (secure.kafka_sasl_ssl, secure.sasl_ssl(check_hostname=True,
                                                                          ca_file=str(secure.folder / "other-ca.crt"))),
        "answered in TLS": (secure.kafka_mtls, KafkaSecurity()),
        "rejected our client certificate": (secure.kafka_mtls, replace(mtls, cert_file=None, key_file=None)),
    }
    for expected, (bootstrap, sec) in refusals.items():
        with pytest.raises(KafkaRefused, match=expected):
            probe(bootstrap, sec)


@pytest.mark.parametrize("case, expected", [
    ("wrong_password", "SASL authentication failed"),
    ("unknown_ca", "TLS certificate not trusted"),
    ("plaintext_to_tls", "the broker answered in TLS"),
])
def test_refused_worker_exits_with_one_line(tmp_path, secure, case, expected):
    sec = {"wrong_password": secure.sasl_ssl(password="not-the-password"),
           "unknown_ca": secure.sasl_ssl(ca_file=str(secure.folder / "other-ca.crt")),
           "plaintext_to_tls": KafkaSecurity()}[case]
    topics = {"in": unique("refs"), "out": unique("verdicts"), "dead": unique("dead")}
    env = worker_env(tmp_path, secure.kafka_sasl_ssl, "redis://127.0.0.1:1/0", topics)
    env |= security_env(sec) | {"FEATDISTILL_KAFKA_OUTAGE_S": "3600", "FEATDISTILL_METRICS_PORT": "0",
                                "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "shell.cli", "worker"], cwd=ROOT,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("FEATDISTILL_")} | env,
                          capture_output=True, text=True, timeout=REFUSAL_BOUND_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert lines[-1].startswith("featdistill worker: error: FEATDISTILL_KAFKA_BOOTSTRAP="), done.stderr
    assert expected in lines[-1]
    # kafka-python's per-attempt connection errors stay out of the log: the cause is said once
    assert sum(expected in line for line in lines) == 1, done.stderr
    assert not any('"kafka_retry"' in line for line in lines), done.stderr  # not an outage
    if sec.password:
        assert sec.password not in done.stderr
