"""The demo's Kafka clients connect as the worker does: from the same FEATDISTILL_KAFKA_*
variables, demo.broker gives the kafka-python options the worker's own settings give."""
from __future__ import annotations

import os

import pytest

from demo.broker import kafka_options
from shell.cli import CliError
from worker.adapters.kafka_security import client_options
from worker.settings import SecuritySettings

K = "FEATDISTILL_KAFKA_"


@pytest.mark.parametrize("env", [
    {},
    {f"{K}SECURITY_PROTOCOL": "SSL", f"{K}CA_FILE": "/ca.pem"},
    {f"{K}SECURITY_PROTOCOL": "SSL", f"{K}CERT_FILE": "/c.pem", f"{K}KEY_FILE": "/k.pem",
     f"{K}SSL_CHECK_HOSTNAME": "false"},
    {f"{K}SECURITY_PROTOCOL": "SASL_PLAINTEXT", f"{K}SASL_MECHANISM": "PLAIN",
     f"{K}SASL_USERNAME": "u", f"{K}SASL_PASSWORD": "p"},
    {f"{K}SECURITY_PROTOCOL": "SASL_SSL", f"{K}SASL_USERNAME": "u", f"{K}SASL_PASSWORD_FILE": "",
     f"{K}CA_FILE": "/ca.pem", f"{K}SSL_CHECK_HOSTNAME": "0"},
], ids=["plaintext", "tls", "mtls-no-hostname", "sasl-plain", "sasl-ssl-password-file"])
def test_the_demo_connects_with_the_options_the_worker_uses(env, monkeypatch, tmp_path):
    if f"{K}SASL_PASSWORD_FILE" in env:
        secret = tmp_path / "password"
        secret.write_text("from-a-file\n")
        env = {**env, f"{K}SASL_PASSWORD_FILE": str(secret)}
    for name in [n for n in os.environ if n.startswith("FEATDISTILL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert kafka_options(env) == client_options(SecuritySettings().kafka_security())


def test_a_password_given_twice_or_unreadable_is_one_clear_error(tmp_path):
    twice = {f"{K}SECURITY_PROTOCOL": "SASL_SSL", f"{K}SASL_PASSWORD": "p",
             f"{K}SASL_PASSWORD_FILE": str(tmp_path / "p")}
    with pytest.raises(CliError, match="not both"):
        kafka_options(twice)
    missing = {f"{K}SECURITY_PROTOCOL": "SASL_SSL", f"{K}SASL_PASSWORD_FILE": str(tmp_path / "p")}
    with pytest.raises(CliError, match="SASL_PASSWORD_FILE"):
        kafka_options(missing)
