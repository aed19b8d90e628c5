"""The demo's own Kafka clients: it publishes the references and reads the results back.

They connect as the worker does, from the same FEATDISTILL_KAFKA_* variables the worker reads
(worker/settings.py; README's settings table). The demo may not import the worker, so the mapping
to kafka-python's options is written here too, and tests/test_demo_broker.py checks that it gives
what the worker's own mapping gives for every protocol.
"""
from __future__ import annotations

import json
import time
from typing import Mapping

from shell.cli import CliError

_ENV = "FEATDISTILL_KAFKA_"
_TRUE, _FALSE = {"1", "on", "t", "true", "y", "yes"}, {"0", "off", "f", "false", "n", "no"}


def kafka_options(env: Mapping[str, str]) -> dict:
    """kafka-python keyword arguments for a client that connects as the worker would."""
    protocol = env.get(f"{_ENV}SECURITY_PROTOCOL", "PLAINTEXT")
    options: dict = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options.update(ssl_check_hostname=_flag(env, f"{_ENV}SSL_CHECK_HOSTNAME", True),
                       ssl_cafile=env.get(f"{_ENV}CA_FILE"),
                       ssl_certfile=env.get(f"{_ENV}CERT_FILE"),
                       ssl_keyfile=env.get(f"{_ENV}KEY_FILE"))
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=env.get(f"{_ENV}SASL_MECHANISM", "SCRAM-SHA-512"),
                       sasl_plain_username=env.get(f"{_ENV}SASL_USERNAME"),
                       sasl_plain_password=_password(env))
    return options


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    if value.strip().lower() not in _TRUE | _FALSE:
        raise CliError(f"{name}={value!r} is not a boolean")
    return value.strip().lower() in _TRUE


def _password(env: Mapping[str, str]) -> str | None:
    name = f"{_ENV}SASL_PASSWORD"
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name)
    if env.get(name):
        raise CliError(f"set {name} or {name}_FILE, not both")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise CliError(f"{name}_FILE={path}: {exc.strerror}") from None


def publish(bootstrap: str, options: dict, topic: str, refs: list[tuple[str, str]]) -> None:
    """Each (id, uri) as an image reference keyed by its id; returns once all are acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    for ref_id, uri in refs:
        producer.send(topic, key=ref_id.encode(),
                      value=json.dumps({"id": ref_id, "uri": uri}).encode())
    producer.flush()
    producer.close()


def collect(bootstrap: str, options: dict, topics: dict, expected: int, timeout_s: float):
    """Verdicts and dead letters, read until `expected` of them together or the timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics["out"], topics["dead"], bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=500,
                             **options)
    verdicts, dead = [], []
    deadline = time.monotonic() + timeout_s
    try:
        while len(verdicts) + len(dead) < expected and time.monotonic() < deadline:
            for m in consumer:
                (verdicts if m.topic == topics["out"] else dead).append(json.loads(m.value))
    finally:
        consumer.close()
    return verdicts, dead
