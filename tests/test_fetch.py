"""Fetching references: file roots, the SSRF guard, redirects, size limits, timeouts, retries.

Safety rule: these tests send traffic to 127.0.0.1 only. Every internal address is refused by the
guard before a socket exists; the autouse `connections` fixture fails any test whose code tries
to connect anywhere but loopback, and the blocked-address tests assert no connection at all.
"""
from __future__ import annotations

import ipaddress
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from detector.images import decode_image
from worker import fetch as fetch_module
from worker.fetch import (FETCH_ERROR_KINDS, FetchConfig, FetchError, ImageFetcher,
                          is_blocked_address, system_resolve)

from conftest import image_bytes, make_image

PNG = image_bytes(make_image(8, 8))
LIMIT = 10_000
LOOPBACK = ("127.0.0.1", "::1")


# --- a local image server -------------------------------------------------------------------

def _send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name.replace("_", "-"), value)
    if "Content_Length" not in headers:
        h.send_header("Content-Length", str(len(body)))
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body)


def _chunked(h: BaseHTTPRequestHandler, pieces: list[bytes]) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Connection", "close")
    h.end_headers()
    for piece in pieces:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    h.wfile.write(b"0\r\n\r\n")


def _drip(h: BaseHTTPRequestHandler) -> None:
    _send(h, 200, Content_Length="50")
    for _ in range(50):  # a byte every 0.1 s: never trips the read timeout, only the deadline
        h.wfile.write(b"x")
        time.sleep(0.1)


ROUTES = {
    "/ok.png": lambda h, n: _send(h, 200, PNG, Content_Type="image/png"),
    "/caf%C3%A9%20noir.png": lambda h, n: _send(h, 200, PNG),
    "/big": lambda h, n: _send(h, 200, b"x" * 100, Content_Length=str(10**9)),
    "/chunked-ok": lambda h, n: _chunked(h, [PNG[:50], PNG[50:]]),
    "/chunked-big": lambda h, n: _chunked(h, [b"x" * 4096] * 64),
    "/slow": lambda h, n: (time.sleep(1.0), _send(h, 200, PNG)),
    "/drip": lambda h, n: _drip(h),
    "/redirect": lambda h, n: _send(h, 302, Location="/ok.png"),
    "/redirect-loop": lambda h, n: _send(h, 301, Location="/redirect-loop"),
    "/redirect-to-private": lambda h, n: _send(h, 302, Location="http://10.0.0.5/x"),
    "/redirect-to-name": lambda h, n: _send(h, 307, Location="http://internal.test/x"),
    "/redirect-to-file": lambda h, n: _send(h, 302, Location="file:///etc/passwd"),
    "/500-then-ok": lambda h, n: _send(h, 500) if n == 1 else _send(h, 200, PNG),
    "/500": lambda h, n: _send(h, 500),
    "/404": lambda h, n: _send(h, 404),
    "/429": lambda h, n: _send(h, 429),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked bodies

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.hits[path] += 1
        self.server.hosts.append(self.headers.get("Host"))
        ROUTES.get(path, lambda h, n: _send(h, 404))(self, self.server.hits[path])

    def log_message(self, *args) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # the client hanging up on /big, /slow and friends is the point of those tests


def _start(tls: ssl.SSLContext | None = None):
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.hits, server.hosts = Counter(), []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture(scope="module")
def http_server():
    server = _start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(http_server):
    http_server.hits.clear()
    http_server.hosts.clear()
    return http_server


def url(server, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
    return f"{scheme}://{host}:{server.server_address[1]}{path}"


# --- fetchers and the safety net --------------------------------------------------------------

@pytest.fixture(autouse=True)
def connections(monkeypatch) -> list[str]:
    """Every address fetch.py connects to; anything but loopback fails the test on the spot."""
    seen: list[str] = []
    real = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        seen.append(address[0])
        if address[0] not in LOOPBACK:
            pytest.fail(f"fetch tried to connect to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    return seen


def no_dns(host: str) -> list[str]:
    pytest.fail(f"unexpected DNS lookup of {host}")


def table(mapping: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str) -> list[str]:
        if calls is not None:
            calls.append(host)
        return mapping[host]
    return resolve


def make(resolve=no_dns, seed: int = 0, ssl_context=None, **config) -> tuple[ImageFetcher, list]:
    settings = dict(max_bytes=LIMIT, connect_timeout_s=2, read_timeout_s=2, total_timeout_s=5)
    sleeps: list[float] = []
    fetcher = ImageFetcher(FetchConfig(**{**settings, **config}), resolve=resolve,
                           sleep=sleeps.append, rng=random.Random(seed), ssl_context=ssl_context)
    return fetcher, sleeps


def refused(fetcher: ImageFetcher, uri: str, kind: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(uri)
    assert info.value.kind == kind, str(info.value)
    return info.value


LOCAL = dict(allow_hosts=("127.0.0.1",))


# --- http: success, pinning, allowlist ------------------------------------------------------

def test_fetches_png_from_allowed_host(server):
    fetcher, _ = make(**LOCAL)
    data = fetcher.fetch(url(server, "/ok.png"))
    assert data == PNG and decode_image(data).size == (8, 8)


def test_non_ascii_paths_are_percent_encoded(server):
    fetcher, _ = make(**LOCAL)
    assert fetcher.fetch(url(server, "/café noir.png")) == PNG
    assert fetcher.fetch(url(server, "/caf%C3%A9%20noir.png")) == PNG  # escapes kept as sent


def test_chunked_body_under_the_limit_is_read_whole(server):
    assert make(**LOCAL)[0].fetch(url(server, "/chunked-ok")) == PNG


def test_connects_to_the_checked_address_with_the_name_in_host_header(server, connections):
    calls: list[str] = []
    fetcher, _ = make(table({"localhost": ["127.0.0.1"]}, calls), allow_hosts=("localhost",))
    assert fetcher.fetch(url(server, "/redirect", host="localhost")) == PNG
    port = server.server_address[1]
    assert server.hosts == [f"localhost:{port}"] * 2
    assert calls == ["localhost", "localhost"]  # one lookup per hop: the redirect is re-checked
    assert connections == ["127.0.0.1", "127.0.0.1"]


def test_allow_hosts_takes_cidrs(server):
    assert make(allow_hosts=("127.0.0.0/8",))[0].fetch(url(server, "/ok.png")) == PNG


def test_loopback_is_refused_without_the_allowlist(server, connections):
    refused(make()[0], url(server, "/ok.png"), "blocked_address")
    refused(make(system_resolve)[0], url(server, "/ok.png", host="localhost"), "blocked_address")
    # A name on the allowlist does not open the door for a different name or a bare IP.
    refused(make(allow_hosts=("localhost",))[0], url(server, "/ok.png"), "blocked_address")
    assert connections == [] and server.hits == {}


# --- the SSRF guard -------------------------------------------------------------------------

INTERNAL = ["10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
            "127.0.0.2", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fc00::1",
            "fd12:3456::1", "fe80::1", "ff02::1", "::ffff:10.0.0.5", "::ffff:127.0.0.1",
            "::ffff:169.254.169.254", "64:ff9b::a00:5", "2002:a00:5::1"]


@pytest.mark.parametrize("address", INTERNAL)
def test_names_resolving_to_internal_addresses_are_refused_before_connecting(address, connections):
    fetcher, _ = make(table({"img.example": [address]}))
    error = refused(fetcher, "http://img.example/a.png", "blocked_address")
    assert not error.transient and error.attempts == 1 and connections == []


def test_one_internal_address_among_public_ones_is_enough_to_refuse(connections):
    fetcher, _ = make(table({"img.example": ["93.184.216.34", "169.254.169.254"]}))
    refused(fetcher, "https://img.example/a.png", "blocked_address")
    assert connections == []


@pytest.mark.parametrize("uri", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x",
                                 "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
                                 "https://[fe80::1]/"])
def test_ip_literals_are_checked_without_dns(uri, connections):
    refused(make()[0], uri, "blocked_address")
    assert connections == []


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass_the_guard(address):
    assert not is_blocked_address(ipaddress.ip_address(address))


# --- redirects ------------------------------------------------------------------------------

def test_redirect_loop_is_bounded(server):
    error = refused(make(max_redirects=3, **LOCAL)[0], url(server, "/redirect-loop"),
                    "too_many_redirects")
    assert server.hits["/redirect-loop"] == 4 and not error.transient


@pytest.mark.parametrize("route", ["/redirect-to-private", "/redirect-to-name"])
def test_redirect_to_internal_address_is_refused_without_connecting(server, connections, route):
    fetcher, _ = make(table({"internal.test": ["10.0.0.5"]}), **LOCAL)
    refused(fetcher, url(server, route), "blocked_address")
    assert connections == ["127.0.0.1"]  # the first hop only


def test_redirect_to_file_is_refused_even_with_file_roots(server):
    fetcher, _ = make(file_roots=("/etc",), **LOCAL)
    refused(fetcher, url(server, "/redirect-to-file"), "bad_redirect")


# --- size limits and timeouts ---------------------------------------------------------------

def test_declared_length_over_the_limit_is_refused_before_reading(server):
    error = refused(make(**LOCAL)[0], url(server, "/big"), "too_large")
    assert error.attempts == 1 and server.hits["/big"] == 1


def test_streamed_body_over_the_limit_is_cut_off(server):
    refused(make(**LOCAL)[0], url(server, "/chunked-big"), "too_large")


def test_stalled_server_times_out_and_is_retried(server):
    fetcher, sleeps = make(read_timeout_s=0.3, retries=1, **LOCAL)
    start = time.monotonic()
    error = refused(fetcher, url(server, "/slow"), "timeout")
    assert error.transient and error.attempts == 2 and len(sleeps) == 1
    assert time.monotonic() - start < 1.5


def test_total_deadline_stops_a_dripping_server(server):
    fetcher, _ = make(read_timeout_s=1.0, total_timeout_s=0.5, **LOCAL)
    start = time.monotonic()
    refused(fetcher, url(server, "/drip"), "timeout")
    assert time.monotonic() - start < 1.0


def test_refused_connection_is_a_transient_connection_error():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher, sleeps = make(**LOCAL)
    error = refused(fetcher, f"http://127.0.0.1:{port}/x", "connection_error")
    assert error.transient and error.attempts == 3 and len(sleeps) == 2


# --- retries --------------------------------------------------------------------------------

def test_5xx_is_retried_until_success(server):
    fetcher, sleeps = make(**LOCAL)
    assert fetcher.fetch(url(server, "/500-then-ok")) == PNG
    assert server.hits["/500-then-ok"] == 2 and len(sleeps) == 1


@pytest.mark.parametrize("route,hits,transient", [("/500", 3, True), ("/429", 3, True),
                                                  ("/404", 1, False)])
def test_http_errors_retry_only_when_transient(server, route, hits, transient):
    fetcher, sleeps = make(**LOCAL)
    error = refused(fetcher, url(server, route), "http_error")
    assert error.status == int(route[1:]) and error.transient is transient
    assert error.attempts == hits == server.hits[route] and len(sleeps) == hits - 1


def test_backoff_is_exponential_capped_jittered_and_seedable(server):
    runs = []
    for _ in range(2):
        fetcher, sleeps = make(retries=4, backoff_s=0.5, backoff_cap_s=2.0, **LOCAL)
        refused(fetcher, url(server, "/500"), "http_error")
        runs.append(sleeps)
    assert runs[0] == runs[1]  # same seed, same delays
    for delay, base in zip(runs[0], [0.5, 1.0, 2.0, 2.0], strict=True):
        assert base / 2 <= delay <= base


def test_no_retry_whose_backoff_would_pass_the_deadline(server):
    fetcher, sleeps = make(backoff_s=10, backoff_cap_s=10, total_timeout_s=1, **LOCAL)
    assert refused(fetcher, url(server, "/500"), "http_error").attempts == 1 and sleeps == []


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
