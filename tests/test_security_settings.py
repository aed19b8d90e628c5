"""Kafka and Redis security settings: secrets from the environment or mounted files, never shown,
checked for consistency, and mapped once into client keyword arguments."""
from __future__ import annotations

import pytest

from worker.adapters.kafka_security import KafkaSecurity, client_options
from worker.adapters.redis_cache import RedisSecurity, redis_client_options
from worker.settings import SecuritySettings, SettingsError, load_settings

SASL = {"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FEATDISTILL_KAFKA_SASL_USERNAME": "svc", "FEATDISTILL_KAFKA_CA_FILE": "/ca.pem"}


def test_secrets_from_files_reach_the_configs_and_are_never_shown(tmp_path):
    (tmp_path / "kafka").write_text("kafka-s3cret\n")  # as mounted from a Secret, newline and all
    (tmp_path / "redis").write_text("redis-s3cret")
    settings = load_settings(SASL | {
        "FEATDISTILL_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka"),
        "FEATDISTILL_REDIS_URL": "rediss://cache:6380/0", "FEATDISTILL_REDIS_USERNAME": "worker",
        "FEATDISTILL_REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
        "FEATDISTILL_REDIS_CA_FILE": "/redis-ca.pem"})
    cfg = settings.configs()
    assert cfg.kafka.security.password == "kafka-s3cret" and cfg.kafka.security.username == "svc"
    assert cfg.redis_security.password == "redis-s3cret"
    for shown in (repr(settings), str(settings), str(settings.model_dump()),
                  settings.model_dump_json(), repr(cfg)):
        assert "s3cret" not in shown


def test_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEATDISTILL_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("FEATDISTILL_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("FEATDISTILL_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("FEATDISTILL_KAFKA_SASL_PASSWORD", "env-s3cret")
    security = SecuritySettings().kafka_security()  # what the demo, bench and tests read
    assert client_options(security) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": "env-s3cret"}
    assert "env-s3cret" not in repr(security)


@pytest.mark.parametrize("extra, message", [
    ({"FEATDISTILL_KAFKA_SASL_PASSWORD": "a", "FEATDISTILL_KAFKA_SASL_PASSWORD_FILE": "/x"},
     "not both"),
    ({"FEATDISTILL_KAFKA_SASL_PASSWORD_FILE": "/no/such/file"}, "No such file"),
    ({}, "needs FEATDISTILL_KAFKA_SASL_USERNAME and FEATDISTILL_KAFKA_SASL_PASSWORD"),
    ({"FEATDISTILL_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "FEATDISTILL_KAFKA_CA_FILE needs TLS"),
    ({"FEATDISTILL_KAFKA_SECURITY_PROTOCOL": "SASL-SSL"}, "FEATDISTILL_KAFKA_SECURITY_PROTOCOL"),
    ({"FEATDISTILL_KAFKA_SASL_PASSWORD": "a", "FEATDISTILL_KAFKA_KEY_FILE": "/k.pem"},
     "FEATDISTILL_KAFKA_KEY_FILE without FEATDISTILL_KAFKA_CERT_FILE"),
    ({"FEATDISTILL_KAFKA_SASL_PASSWORD": "a", "FEATDISTILL_REDIS_CA_FILE": "/ca.pem"},
     "a rediss:// FEATDISTILL_REDIS_URL"),
])
def test_inconsistent_security_is_one_line(extra, message):
    with pytest.raises(SettingsError) as err:
        load_settings(SASL | extra)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_client_options_for_mtls_and_the_default():
    assert client_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    mtls = KafkaSecurity("SSL", ca_file="/ca", cert_file="/c", key_file="/k", check_hostname=False)
    assert client_options(mtls) == {
        "security_protocol": "SSL", "ssl_check_hostname": False, "ssl_cafile": "/ca",
        "ssl_certfile": "/c", "ssl_keyfile": "/k"}


def test_redis_options_only_add_tls_to_rediss_urls():
    security = RedisSecurity(username="u", password="p", ca_file="/ca")
    assert redis_client_options("redis://h:6379/0", RedisSecurity()) == {}
    assert redis_client_options("redis://h:6379/0", security) == {"username": "u", "password": "p"}
    tls = redis_client_options("rediss://h:6380/0", security)
    assert tls["ssl_ca_certs"] == "/ca" and tls["ssl_cert_reqs"] == "required"
    assert tls["ssl_check_hostname"] is True and tls["password"] == "p"
