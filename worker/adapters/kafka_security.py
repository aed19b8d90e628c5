"""How every Kafka client of ours authenticates: TLS, SASL, client certificates.

`KafkaSecurity` is the frozen form of the FEATDISTILL_KAFKA_* security settings;
`client_options` turns it into kafka-python keyword arguments, the one place that mapping is
written (worker, replay, demo, bench and the test helpers all pass it to their clients).

A broker that answers but refuses us (wrong password, a certificate we do not trust, a TLS
listener spoken to in plaintext) is not an outage: worker/adapters/kafka_probe.py finds that out before a
client is built and raises `KafkaRefused`, which nothing retries. `quiet_connect` keeps
kafka-python's per-connection error lines out of the log while a client is built.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from kafka.errors import KafkaError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
T = TypeVar("T")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"  # one of PROTOCOLS
    sasl_mechanism: str = "SCRAM-SHA-512"  # one of MECHANISMS; only with SASL_*
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, so never logged
    ca_file: str | None = None  # PEM; None: the system's CAs
    cert_file: str | None = None  # client certificate (mTLS), PEM
    key_file: str | None = None  # its private key, PEM (unencrypted, as mounted from a Secret)
    check_hostname: bool = True  # the certificate must name the broker's host

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


def client_options(security: KafkaSecurity) -> dict:
    """kafka-python keyword arguments for KafkaConsumer, KafkaProducer and KafkaAdminClient."""
    options: dict = {"security_protocol": security.protocol}
    if security.tls:
        options.update(ssl_check_hostname=security.check_hostname, ssl_cafile=security.ca_file,
                       ssl_certfile=security.cert_file, ssl_keyfile=security.key_file)
    if security.sasl:
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.username,
                       sasl_plain_password=security.password)
    return options


class KafkaRefused(RuntimeError):
    """The broker answered and refused us (credentials, certificates, protocol): not retried."""


class _ConnectionErrors(logging.Handler):
    """kafka-python's connection-error records while a client is being built: kept back (the
    outage loop logs one line per attempt instead), the last error remembered for that line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("kafka.net") and record.levelno <= logging.ERROR:
            errors = [a for a in (record.args if isinstance(record.args, tuple) else ())
                      if isinstance(a, BaseException)]
            self.last = f"{type(errors[-1]).__name__}: {errors[-1]}" if errors else self.last
        elif record.levelno >= logging.getLogger().getEffectiveLevel():
            logging.getLogger().handle(record)


def quiet_connect(make: Callable[[], T]) -> Callable[[], T]:
    """`make` (building a kafka-python client) without kafka-python's per-connection error lines
    (dozens a second while a broker is away); a failure carries the last of them instead."""

    def attempt() -> T:
        library = logging.getLogger("kafka")
        errors, propagate = _ConnectionErrors(), library.propagate
        library.addHandler(errors)
        library.propagate = False
        try:
            return make()
        except KafkaError as exc:
            if errors.last and errors.last not in str(exc):
                raise type(exc)(f"{exc} (last connection error: {errors.last})") from exc
            raise
        finally:
            library.removeHandler(errors)
            library.propagate = propagate

    return attempt
