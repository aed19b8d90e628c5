"""The verdict cache on Redis: MGET for a poll batch's lookups, one pipelined SET EX for its writes.

Values are opaque bytes here; worker/cache_match.py says what they hold and validates every one
read back. A key holding another Redis type (a hash, a list) reads as absent (MGET answers nil)
and the next write replaces it.

The cache is an optimisation, never a dependency: when Redis is unreachable every lookup is a miss
and writes are dropped; the outage is logged once (and once more when it ends) and counted in
metrics. To keep a dead Redis from costing a connect timeout on every poll, we wait
`retry_after_s` before trying it again. Refused credentials or an untrusted certificate are
handled the same way (the worker keeps judging, without cache), and the one log line says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import redis
import structlog

from worker.metrics import Metrics

log = structlog.get_logger("featdistill.cache")


@dataclass(frozen=True)
class RedisSecurity:
    """ACL credentials and, for a rediss:// URL, the TLS files; None: whatever the URL says."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, so never logged
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True


def redis_client_options(url: str, security: RedisSecurity) -> dict:
    """Keyword arguments for redis.Redis.from_url(url, ...): credentials override the URL's."""
    options = {}
    if security.username:
        options["username"] = security.username
    if security.password:
        options["password"] = security.password
    if url.startswith("rediss://"):  # the ssl_* arguments exist only on TLS connections
        options.update(ssl_cert_reqs="required", ssl_ca_certs=security.ca_file,
                       ssl_certfile=security.cert_file, ssl_keyfile=security.key_file,
                       ssl_check_hostname=security.check_hostname)
    return options


def why_down(exc: redis.RedisError) -> str:
    """What to check, when the cause is our settings rather than an outage."""
    text = str(exc)
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return "Redis refused the credentials: check FEATDISTILL_REDIS_USERNAME/PASSWORD(_FILE)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "Redis's TLS certificate is not trusted: check FEATDISTILL_REDIS_CA_FILE"
    if "SSL" in text:
        return "TLS to Redis failed: check the rediss:// URL and FEATDISTILL_REDIS_*_FILE"
    return "Redis unreachable"


class RedisVerdictCache:
    def __init__(
        self, client: redis.Redis, ttl_s: int, metrics: Metrics,
        retry_after_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0

    @classmethod
    def from_url(cls, url: str, ttl_s: int, metrics: Metrics, timeout_s: float = 0.5,
                 security: RedisSecurity = RedisSecurity()):
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s, health_check_interval=10,
                                      **redis_client_options(url, security))
        return cls(client, ttl_s, metrics)

    @property
    def up(self) -> bool:
        return self._down_since is None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        if not keys or not self._may_try():
            return {}
        try:
            values = self.client.mget(keys)
        except redis.RedisError as exc:
            self._failed(exc)
            return {}
        self._succeeded()
        return {k: v for k, v in zip(keys, values) if v is not None}

    def set_many(self, items: dict[str, bytes]) -> None:
        if not items or not self._may_try():
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, value, ex=self.ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            return
        self._succeeded()

    def _may_try(self) -> bool:
        if self._down_since is None or self._clock() >= self._next_try:
            return True
        self.metrics.cache_errors.inc()  # skipped while down: still an operation without cache
        return False

    def _failed(self, exc: Exception) -> None:
        self.metrics.cache_errors.inc()
        self.metrics.cache_up.set(0)
        self._next_try = self._clock() + self.retry_after_s
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("cache_unavailable", reason=why_down(exc), error=str(exc),
                        note="judging without cache until Redis answers again")

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.info("cache_recovered", outage_s=round(self._clock() - self._down_since, 1))
            self._down_since = None
        self.metrics.cache_up.set(1)
