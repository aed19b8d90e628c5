"""Fetching over https (certificate checked against the URI's name), from file:// roots (no
escapes), and what becomes of garbage URIs and unknown schemes.
"""
from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from fetch_support import LIMIT, PNG, _start, make, refused, table, url
from fetch_support import connections  # noqa: F401  (the autouse loopback-only fixture)
from worker.adapters import fetch as fetch_module
from worker.ports import FETCH_ERROR_KINDS


# --- https ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A local https server whose self-signed certificate names only `localhost`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _start(context)
    yield server, ssl.create_default_context(cafile=str(cert))
    server.shutdown()
    server.server_close()


def test_https_verifies_the_certificate_against_the_uri_name(tls):
    server, trusted = tls
    resolve = table({"localhost": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    allow = ("localhost", "other.test")
    fetcher, _ = make(resolve, ssl_context=trusted, allow_hosts=allow)
    assert fetcher.fetch(url(server, "/ok.png", "localhost", "https")) == PNG
    # Same pinned address, but the name in the URI is not on the certificate.
    refused(fetcher, url(server, "/ok.png", "other.test", "https"), "tls_error")
    # The system trust store does not know our self-signed certificate.
    untrusting, _ = make(resolve, allow_hosts=allow)
    error = refused(untrusting, url(server, "/ok.png", "localhost", "https"), "tls_error")
    assert not error.transient and error.attempts == 1


# --- file:// --------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "root2"  # a sibling sharing the name prefix
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(PNG)
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "alias.png").symlink_to(root / "sub" / "a.png")
    (root / "big.bin").write_bytes(b"x" * (LIMIT + 1))
    return root, outside


def test_file_inside_root_is_read(roots):
    root, _ = roots
    fetcher, _ = make(file_roots=(str(root),))
    assert fetcher.fetch(f"file://{root}/sub/a.png") == PNG
    assert fetcher.fetch(f"file://{root}/alias.png") == PNG  # a symlink that stays inside


@pytest.mark.parametrize("tail", ["sub/../../root2/secret.png", "%2e%2e/root2/secret.png",
                                  "escape.png", "../root2/missing.png"])
def test_file_escapes_are_refused(roots, tail):
    root, _ = roots
    refused(make(file_roots=(str(root),))[0], f"file://{root}/{tail}", "outside_roots")


@pytest.mark.parametrize("tail,kind", [("sub/missing.png", "not_found"), ("sub", "not_a_file"),
                                       ("big.bin", "too_large")])
def test_file_errors(roots, tail, kind):
    root, _ = roots
    error = refused(make(file_roots=(str(root),))[0], f"file://{root}/{tail}", kind)
    assert not error.transient and error.attempts == 1


def test_file_scheme_is_off_without_roots(roots):
    root, _ = roots
    refused(make()[0], f"file://{root}/sub/a.png", "unsupported_scheme")


# --- URIs and schemes -----------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["", "   ", "not a uri", "http://", "http://[::1", "s3://",
                                 "http://img.example:99999/a.png", "file://server/share/a.png",
                                 None, "http://x/" + "a" * 9000])
def test_garbage_uris(uri):
    refused(make(file_roots=("/nonexistent",))[0], uri, "bad_uri")


def test_unknown_or_disabled_schemes():
    refused(make()[0], "ftp://img.example/a.png", "unsupported_scheme")
    refused(make(schemes=("https",))[0], "http://img.example/a.png", "unsupported_scheme")


def test_s3_without_boto3_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    error = refused(make()[0], "s3://bucket/images/a.png", "s3_unavailable")
    assert error.attempts == 1


def test_every_kind_raised_is_declared():
    source = Path(fetch_module.__file__).read_text()
    raised = set(re.findall(r'FetchError\(\s*"(\w+)"', source))
    assert raised and raised <= FETCH_ERROR_KINDS
