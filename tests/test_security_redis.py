"""The verdict cache on the TLS Redis of `services.sh start --secure`, as its ACL user: works with
the right credentials; with wrong ones (or an unknown CA) the cache is down, the worker keeps
judging, and the log says why once."""
from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from detector.batcher import BatchPolicy
from detector.service import Detector
from worker.adapters.redis_cache import RedisSecurity, RedisVerdictCache
from worker.metrics import Metrics
from worker.pipeline import Pipeline, PipelineConfig
from worker.testing import MemoryFetcher, MemorySink, MemorySource

from conftest import image_bytes, make_image
from services import require_secure_services, unique

pytestmark = [pytest.mark.services]


@pytest.fixture
def secure():
    return require_secure_services()


def acl(secure, **changes) -> RedisSecurity:
    values = {"username": secure.username,
              "password": (secure.folder / "redis.password").read_text().strip(),
              "ca_file": str(secure.folder / "ca.crt")} | changes
    return RedisSecurity(**values)


def test_tls_and_acl_user_store_and_read(secure):
    metrics = Metrics()
    cache = RedisVerdictCache.from_url(secure.redis_tls_url, 60, metrics, security=acl(secure))
    key = unique("fd-secure")
    cache.set_many({key: b"v"})
    assert cache.get_many([key]) == {key: b"v"} and cache.up
    assert cache.client.acl_whoami() == secure.username
    cache.client.delete(key)


@pytest.mark.parametrize("changes, reason", [
    ({"password": "not-the-password"}, "Redis refused the credentials"),
    ({"username": "nobody"}, "Redis refused the credentials"),
    ({"ca_file": "other-ca.crt"}, "certificate is not trusted"),
])
def test_refused_cache_is_down_and_says_why_once(secure, tiny_bundle, changes, reason):
    if "ca_file" in changes:
        changes = {"ca_file": str(secure.folder / changes["ca_file"])}
    metrics = Metrics()
    cache = RedisVerdictCache.from_url(secure.redis_tls_url, 60, metrics,
                                       security=acl(secure, **changes))
    cache.retry_after_s = 0  # try Redis on every operation: each one fails again
    blobs = {f"mem://img{i}": image_bytes(make_image(48, 48, seed=i)) for i in range(6)}
    source, sink = MemorySource("refs"), MemorySink()
    config = PipelineConfig("refs", "verdicts", "dead", "w1", batch=BatchPolicy(2, 0.0))
    pipeline = Pipeline(config, source, MemoryFetcher(blobs), cache, sink,
                        Detector.load(tiny_bundle), metrics)
    try:
        with capture_logs() as logs:
            for i in range(6):
                source.append(json.dumps({"id": f"m{i}", "uri": f"mem://img{i}"}).encode())
                pipeline.step()
            pipeline.drain()
    finally:
        pipeline.close()
    assert len(sink.on("verdicts")) == 6 and not sink.on("dead")  # judged all the same
    assert not cache.up and metrics.value("featdistill_cache_up") == 0
    assert metrics.value("featdistill_cache_errors_total") > 1  # tried more than once: one line
    down = [e for e in logs if e["event"] == "cache_unavailable"]
    assert len(down) == 1 and reason in down[0]["reason"], logs
    assert acl(secure).password not in json.dumps(logs)
