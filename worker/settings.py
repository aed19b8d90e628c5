"""Worker settings: read once from FEATDISTILL_* environment variables, then frozen plain objects.

Only worker.main calls `load_settings`; everything inward receives the dataclasses built by
`Settings.configs()`. README's settings table is checked against this model by a test.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (Field, SecretStr, StringConstraints, ValidationError, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector.batcher import BatchPolicy
from detector.images import DEFAULT_FORMATS, SUPPORTED_FORMATS, ImageLimits
from worker.adapters.fetch import FetchConfig
from worker.adapters.kafka_io import KafkaConfig
from worker.adapters.kafka_security import KafkaSecurity
from worker.adapters.redis_cache import RedisSecurity
from worker.headers import HeaderPolicy
from worker.pipeline import PipelineConfig
from worker.readiness import ReadinessPolicy

PREFIX = "FEATDISTILL_"
# A Kafka header name to carry (FEATDISTILL_CARRY_HEADERS): a plain token, as HTTP's are.
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class SettingsError(ValueError):
    pass


# ---------------------------------------------------------------- Kafka and Redis security
# Its own class so that the demo, the bench and the tests can read it without the worker's other
# settings. A secret is given as itself or, with the _FILE variant, as a file holding it (a
# mounted Kubernetes Secret); it is read here, once, and kept as a SecretStr: masked in any repr
# or dump, and in the frozen objects a field left out of their repr.
_SECRET_FILES = {"kafka_sasl_password": "kafka_sasl_password_file",
                 "redis_password": "redis_password_file"}


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (managed Kafka: SASL_SSL)")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (masked)")
    kafka_sasl_password_file: str | None = Field(
        None, description="file holding the SASL password, instead of FEATDISTILL_KAFKA_SASL_PASSWORD")
    kafka_ca_file: str | None = Field(
        None, description="PEM CA bundle the broker's certificate must chain to (default: the system's)")
    kafka_cert_file: str | None = Field(None, description="client certificate, PEM (mTLS)")
    kafka_key_file: str | None = Field(None, description="client certificate's private key, PEM (mTLS)")
    kafka_ssl_check_hostname: bool = Field(
        True, description="the broker's certificate must name the host we connect to")
    redis_username: str | None = Field(None, description="Redis ACL user (default: the URL's)")
    redis_password: SecretStr | None = Field(None, description="Redis ACL password (masked)")
    redis_password_file: str | None = Field(
        None, description="file holding the Redis password, instead of FEATDISTILL_REDIS_PASSWORD")
    redis_ca_file: str | None = Field(
        None, description="PEM CA bundle for a rediss:// URL (default: the system's)")
    redis_cert_file: str | None = Field(None, description="client certificate for rediss://, PEM")
    redis_key_file: str | None = Field(None, description="its private key, PEM")
    redis_ssl_check_hostname: bool = Field(
        True, description="Redis's certificate must name the host we connect to")

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for secret, path_field in _SECRET_FILES.items():
            path = data.get(path_field)
            if not path:
                continue
            if data.get(secret):
                raise ValueError(f"set {PREFIX}{secret.upper()} or {PREFIX}{path_field.upper()}, "
                                 "not both")
            try:
                with open(path, encoding="utf-8") as f:
                    data[secret] = f.read().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{PREFIX}{path_field.upper()}={path}: {exc.strerror}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self):
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        for name in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file"):
            if getattr(self, name) and not tls:
                raise ValueError(f"{PREFIX}{name.upper()} needs TLS: set "
                                 f"{PREFIX}KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL")
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"{PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             f"{PREFIX}KAFKA_SASL_USERNAME and {PREFIX}KAFKA_SASL_PASSWORD(_FILE)")
        url = getattr(self, "redis_url", None)  # a field of Settings (the worker's whole set)
        for name in ("redis_ca_file", "redis_cert_file", "redis_key_file"):
            if url and getattr(self, name) and not url.startswith("rediss://"):
                raise ValueError(f"{PREFIX}{name.upper()} needs TLS: a rediss:// "
                                 f"{PREFIX}REDIS_URL")
        for kind in ("kafka", "redis"):
            if getattr(self, f"{kind}_key_file") and not getattr(self, f"{kind}_cert_file"):
                raise ValueError(f"{PREFIX}{kind.upper()}_KEY_FILE without "
                                 f"{PREFIX}{kind.upper()}_CERT_FILE")
        return self

    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol, sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username, password=_reveal(self.kafka_sasl_password),
            ca_file=self.kafka_ca_file, cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file, check_hostname=self.kafka_ssl_check_hostname)

    def redis_security(self) -> RedisSecurity:
        return RedisSecurity(
            username=self.redis_username, password=_reveal(self.redis_password),
            ca_file=self.redis_ca_file, cert_file=self.redis_cert_file,
            key_file=self.redis_key_file, check_hostname=self.redis_ssl_check_hostname)


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


class Settings(SecuritySettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    # Model
    bundle: str = Field(description="path of the checkpoint bundle directory")
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    dtype: Literal["auto", "fast", "float32", "bfloat16", "float16"] = Field(
        "auto", description="precision: auto (bfloat16 on CUDA, float32 on CPU), fast (bfloat16 "
        "where native: CUDA or a CPU with AVX512-BF16/AMX, else float32), float32, bfloat16, float16")
    uncertain_spread: float | None = Field(
        None, ge=0, le=1, description="label 'uncertain' when the experts' P(fake) spread exceeds this")
    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    group_id: str = Field("featdistill", description="consumer group of the workers")
    input_topic: str = Field("image-references", description="topic of image references")
    verdict_topic: str = Field("image-verdicts", description="topic verdicts are published to")
    dead_letter_topic: str = Field("image-dead-letters", description="topic of dead letters")
    session_timeout_ms: int = Field(10_000, gt=0, description="consumer session timeout")
    heartbeat_interval_ms: int = Field(2_000, gt=0, description="consumer heartbeat interval")
    max_poll_interval_ms: int = Field(300_000, gt=0, description="max time between polls")
    poll_max_records: int = Field(256, gt=0, description="records per poll at most")
    kafka_outage_s: float = Field(
        120.0, gt=0, description="broker outage waited out (connect, publish) before exiting")
    kafka_reconnect_backoff_max_ms: int = Field(
        1_000, gt=0, description="longest wait between attempts to reach a broker that went away "
        "(kafka-python's own 30 s left workers idle long after the broker was back)")
    max_in_flight: int = Field(
        512, gt=0, description="messages polled and not yet published at most (then polling pauses)")
    max_in_flight_mb: float = Field(
        2048, gt=0,
        description="model inputs (preprocessed pixels) held before inference at most, MB "
                    "(then polling pauses)")
    # Batching
    max_batch: int = Field(32, gt=0, description="images per inference batch at most")
    max_wait_ms: float = Field(50, ge=0, description="longest wait of a partial batch, ms")
    # Cache
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL of the verdict cache")
    cache_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="verdict cache TTL, seconds")
    # Fetching
    fetch_threads: int = Field(8, gt=0, description="concurrent fetch/decode threads")
    file_roots: list[str] = Field(default_factory=list,
                                  description="directories file:// URIs may read (JSON list)")
    allow_hosts: list[str] = Field(default_factory=list,
                                   description="hosts/IPs/CIDRs exempt from the SSRF block (JSON list)")
    fetch_max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest image file, bytes")
    fetch_connect_timeout_s: float = Field(3.0, gt=0, description="connect timeout")
    fetch_read_timeout_s: float = Field(10.0, gt=0, description="read timeout per socket read")
    fetch_total_timeout_s: float = Field(30.0, gt=0, description="deadline of one fetch")
    fetch_retries: int = Field(2, ge=0, description="retries of transient fetch failures")
    fetch_max_redirects: int = Field(3, ge=0, description="redirects followed at most")
    max_pixels: int = Field(40_000_000, gt=0, description="largest image, width x height")
    # Image formats
    image_formats: list[str] = Field(
        default_factory=lambda: sorted(DEFAULT_FORMATS),
        description="image formats decoded (JSON list of Pillow's names); the rest are dead letters")

    @field_validator("image_formats")
    @classmethod
    def _known_image_formats(cls, formats: list[str]) -> list[str]:
        """Case-insensitive names; an unknown one (a typo would refuse every image of that format)
        stops the worker instead."""
        names = sorted({name.strip().upper() for name in formats})
        unknown = [name for name in names if name not in SUPPORTED_FORMATS]
        if unknown:
            raise ValueError(f"unknown {unknown}, choose from {sorted(SUPPORTED_FORMATS)}")
        if not names:
            raise ValueError("at least one format is needed")
        return names

    # Operations
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
                           description="name of this worker in verdicts and logs")
    metrics_port: int = Field(9400, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0: any)")
    log_format: Literal["json", "console"] = Field("json", description="json in production")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    shutdown_grace_s: float = Field(20.0, gt=0, description="drain deadline after SIGTERM")
    ready_max_dead_letter_share: float = Field(
        0.5, gt=0, le=1, description="/readyz fails when dead letters exceed this share of the "
        "last minute's results (at least 20); 1 turns it off")
    # Trace context and carried headers (worker.headers)
    carry_headers: list[HeaderName] = Field(
        default_factory=list, description="Kafka headers carried from a reference onto its "
        "verdict or dead letter and into its log lines, besides traceparent and tracestate "
        "(JSON list)")

    def configs(self) -> "WorkerConfig":
        return WorkerConfig(
            bundle=self.bundle, device=self.device, dtype=self.dtype,
            redis_url=self.redis_url, cache_ttl_s=self.cache_ttl_s,
            redis_security=self.redis_security(),
            metrics_port=self.metrics_port, log_format=self.log_format, log_level=self.log_level,
            shutdown_grace_s=self.shutdown_grace_s,
            kafka=KafkaConfig(
                bootstrap=self.kafka_bootstrap, group_id=self.group_id, client_id=self.worker_id,
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                max_poll_interval_ms=self.max_poll_interval_ms,
                outage_s=self.kafka_outage_s, security=self.kafka_security(),
                reconnect_backoff_max_ms=self.kafka_reconnect_backoff_max_ms,
            ),
            pipeline=PipelineConfig(
                input_topic=self.input_topic, verdict_topic=self.verdict_topic,
                dead_letter_topic=self.dead_letter_topic, worker_id=self.worker_id,
                batch=BatchPolicy(self.max_batch, self.max_wait_ms / 1000.0),
                poll_max_records=self.poll_max_records, fetch_threads=self.fetch_threads,
                uncertain_spread=self.uncertain_spread,
                image_limits=ImageLimits(self.max_pixels, frozenset(self.image_formats)),
                max_in_flight=self.max_in_flight,
                max_in_flight_bytes=int(self.max_in_flight_mb * 1024 * 1024),
                readiness=ReadinessPolicy(max_dead_letter_share=self.ready_max_dead_letter_share),
                headers=HeaderPolicy(carry=tuple(self.carry_headers)),
            ),
            fetch=FetchConfig(
                file_roots=tuple(self.file_roots), allow_hosts=tuple(self.allow_hosts),
                max_bytes=self.fetch_max_bytes, connect_timeout_s=self.fetch_connect_timeout_s,
                read_timeout_s=self.fetch_read_timeout_s,
                total_timeout_s=self.fetch_total_timeout_s,
                max_redirects=self.fetch_max_redirects, retries=self.fetch_retries,
            ),
        )


@dataclass(frozen=True)
class WorkerConfig:
    bundle: str
    device: str
    dtype: str | None
    redis_url: str
    cache_ttl_s: int
    redis_security: RedisSecurity
    metrics_port: int
    log_format: str
    log_level: str
    shutdown_grace_s: float
    kafka: KafkaConfig
    pipeline: PipelineConfig
    fetch: FetchConfig


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read FEATDISTILL_* variables; a bad value is one line naming the variable."""
    env = os.environ if environ is None else environ
    try:
        if environ is None:
            return Settings()
        keys = {k[len(PREFIX):].lower(): v for k, v in env.items() if k.startswith(PREFIX)}
        return Settings.model_validate(_parse_complex(keys))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("; ".join(lines)) from None


def _parse_complex(values: dict[str, str]) -> dict:
    """List settings arrive as JSON, as pydantic-settings reads them from the environment."""
    import json

    out = dict(values)
    for name, field in Settings.model_fields.items():
        if name in out and "list" in str(field.annotation):
            try:
                out[name] = json.loads(out[name])
            except ValueError:
                pass  # leave it to validation, which names the variable
    return out
