"""The local image server, the loopback-only safety net and the fetcher factory shared by the
fetch tests (tests/test_fetch.py: http, the SSRF guard, limits, retries; tests/test_fetch_schemes.py:
https, file://, URIs and schemes).

Safety rule: these tests send traffic to 127.0.0.1 only. Every internal address is refused by the
guard before a socket exists; the autouse `connections` fixture (import it into a test module)
fails any test whose code tries to connect anywhere but loopback.
"""
from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from worker.adapters.fetch import FetchConfig, ImageFetcher
from worker.ports import FetchError

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
