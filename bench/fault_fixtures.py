"""What bench/fault_injection.py feeds the workers: a local image server, a canary, and a set of
references each with the outcome it must get.

The image server listens on 127.0.0.2, the one address the workers are told to allow
(FEATDISTILL_ALLOW_HOSTS); the canary listens on 127.0.0.1 (and ::1), which the default fetch
policy refuses. Every SSRF form below points at the canary or at another internal address, so
the canary sees a connection only if the policy let one through.
"""
from __future__ import annotations

import io
import random
import re
import selectors
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_HOST = "127.0.0.2"  # allowed by the workers; nothing else on 127.0.0.0/8 is
VERDICT = "verdict"
SLOW_PIECES, SLOW_PAUSE_S = 4, 0.8  # a slow image arrives whole in about 3 s
DRIP_EVERY_S, DRIP_FOR_S = 2.0, 120.0  # a byte every 2 s: only the fetch deadline ends it


def dead(kind: str) -> str:
    return f"dead_letter:{kind}"


@dataclass(frozen=True)
class Reference:
    id: str
    category: str  # good, slow, drip, or the poison form's name
    value: bytes | None  # the message as produced (key = id)
    expected: frozenset[str]  # VERDICT or dead(kind): any of these is right


# ------------------------------------------------------------------------------ images
def make_jpeg(seed: int, size: tuple[int, int] = (192, 144)) -> bytes:
    """A distinct small JPEG: shapes on a flat colour, so pHashes differ between seeds."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        w, h = (int(v) for v in rng.integers(15, 90, 2))
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(1)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims 900 MP: refused from the header, before any pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------ servers
class ImageServer:
    """HTTP on 127.0.0.2: good, slow and dripping images, and content-level poison."""

    def __init__(self, pool: list[bytes], canary_port: int) -> None:
        self.pool, self.canary_port = pool, canary_port
        self.stopping = threading.Event()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests += 1
                try:
                    server.serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker went away mid-reply (killed, or gave up): theirs to retry

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # 3 workers x 8 fetch threads connect at once

        self.httpd = Server((IMAGE_HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://{IMAGE_HOST}:{self.port}"

    def start(self) -> "ImageServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        route, _, rest = h.path.lstrip("/").partition("/")
        number = int(re.sub(r"\D", "", rest) or 0)
        body = self.pool[number % len(self.pool)]
        if route == "img":
            self._send(h, 200, body, "image/jpeg")
        elif route == "slow":
            self._send_slowly(h, body)
        elif route == "drip":
            self._drip(h)
        elif route == "text":
            self._send(h, 200, b"<html>not an image</html>\n" * 4, "text/html")
        elif route == "truncated":
            self._send(h, 200, body[: len(body) // 2], "image/jpeg")
        elif route == "bomb":
            self._send(h, 200, png_bomb(), "image/png")
        elif route == "huge":  # declared past FEATDISTILL_FETCH_MAX_BYTES: refused from the header
            h.send_response(200)
            h.send_header("Content-Length", str(64 * 1024 * 1024))
            h.end_headers()
        elif route == "redirect-canary":
            h.send_response(302)
            h.send_header("Location", f"http://127.0.0.1:{self.canary_port}/redirected")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif route == "error":
            self._send(h, 503, b"busy", "text/plain")
        else:
            self._send(h, 404, b"no such image", "text/plain")

    @staticmethod
    def _send(h, status: int, body: bytes, content_type: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _send_slowly(self, h, body: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        step = -(-len(body) // SLOW_PIECES)
        for start in range(0, len(body), step):
            h.wfile.write(body[start:start + step])
            h.wfile.flush()
            if self.stopping.wait(SLOW_PAUSE_S):
                return

    def _drip(self, h) -> None:
        """A byte every 2 s, each read well inside the read timeout: only the whole-fetch
        deadline stops the client (the stall of issue 12's first fault run)."""
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        until = time.monotonic() + DRIP_FOR_S
        try:
            while time.monotonic() < until and not self.stopping.is_set():
                h.wfile.write(b"\xff")
                h.wfile.flush()
                self.stopping.wait(DRIP_EVERY_S)
        except OSError:
            pass  # the client gave up: what it should do


class Canary:
    """Counts every TCP connection to 127.0.0.1:port (and [::1]:port where IPv6 is up).
    Nothing here may ever be reached: the fetch policy refuses loopback before connecting."""

    def __init__(self) -> None:
        self.hits: list[dict] = []
        self._selector = selectors.DefaultSelector()
        v4 = socket.create_server(("127.0.0.1", 0))
        self.port = v4.getsockname()[1]
        self._sockets = [v4]
        try:
            v6 = socket.create_server(("::1", self.port), family=socket.AF_INET6)
            self._sockets.append(v6)
        except OSError:
            pass  # no IPv6 loopback here: the [::1] forms are still refused by policy
        for sock in self._sockets:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._stop = threading.Event()

    def start(self) -> "Canary":
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                try:
                    conn, peer = key.fileobj.accept()
                except OSError:
                    continue
                self.hits.append({"at": time.time(), "peer": str(peer[0])})
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            sock.close()


# ------------------------------------------------------------------------------ references
def ssrf_forms(canary: int) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (uri, acceptable dead-letter kinds). Forms that need the resolver may also end
    as dns_error where the resolver does not read them as addresses; either is a refusal."""
    blocked = frozenset({dead("fetch_blocked_address")})
    resolved = blocked | {dead("fetch_dns_error")}
    return {
        "ssrf_loopback": (f"http://127.0.0.1:{canary}/admin", blocked),
        "ssrf_localhost": (f"http://localhost:{canary}/admin", resolved),
        "ssrf_ipv6_loopback": (f"http://[::1]:{canary}/admin", blocked),
        "ssrf_ipv4_mapped": (f"http://[::ffff:127.0.0.1]:{canary}/admin", blocked),
        "ssrf_zero": (f"http://0.0.0.0:{canary}/admin", blocked),
        "ssrf_decimal": (f"http://2130706433:{canary}/admin", resolved),
        "ssrf_hex": (f"http://0x7f000001:{canary}/admin", resolved),
        "ssrf_short": (f"http://127.1:{canary}/admin", resolved),
        "ssrf_userinfo": (f"http://user:pw@127.0.0.1:{canary}/admin", blocked),
        "ssrf_metadata": ("http://169.254.169.254/latest/meta-data/", blocked),
        "ssrf_private": (f"http://10.1.2.3:{canary}/admin", blocked),
        "ssrf_ula": (f"http://[fd00::1]:{canary}/admin", blocked),
        "ssrf_file": ("file:///etc/passwd", frozenset({dead("fetch_unsupported_scheme")})),
        "ssrf_gopher": (f"gopher://127.0.0.1:{canary}/_",
                        frozenset({dead("fetch_unsupported_scheme")})),
    }


def content_forms(base: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (uri template with {n}, acceptable outcomes): poison served by the image server."""
    one = lambda kind: frozenset({dead(kind)})  # noqa: E731
    return {
        "not_an_image": (base + "/text/{n}", one("decode_not_an_image")),
        "truncated_jpeg": (base + "/truncated/{n}.jpg", one("decode_corrupt_image")),
        "pixel_bomb": (base + "/bomb/{n}.png", one("decode_too_many_pixels")),
        "too_large": (base + "/huge/{n}.jpg", one("fetch_too_large")),
        "not_found": (base + "/missing/{n}.jpg", one("fetch_http_error")),
        "server_error": (base + "/error/{n}.jpg", one("fetch_http_error")),
        "redirect_to_canary": (base + "/redirect-canary/{n}", one("fetch_blocked_address")),
    }


MESSAGE_FORMS = {  # name -> (message value, acceptable outcomes)
    "not_json": (b"{this is not json", frozenset({dead("not_json")})),
    "no_uri": (b'{"id": "x"}', frozenset({dead("invalid_message")})),
    "tombstone": (None, frozenset({dead("empty_message")})),
}


def build_references(count: int, poison_share: float, base: str, canary: int, pool_size: int,
                     seed: int = 0) -> list[Reference]:
    """`count` references in a seeded order: poison (`poison_share`, every form in turn), a few
    that drip (as many as issue 12's run had per reference, at least 3), a few slow ones that
    arrive whole, the rest good images from a pool (repeats: cache hits and in-flight twins)."""
    import json

    rng = random.Random(seed)
    forms = [(name, uri, ok) for name, (uri, ok) in {**content_forms(base),
                                                       **ssrf_forms(canary)}.items()]
    forms += [(name, None, ok) for name, (_, ok) in MESSAGE_FORMS.items()]
    n_poison = round(count * poison_share)
    n_drip = max(3, round(count * 14 / 10_000))
    n_slow = max(5, round(count * 0.005))
    plan = ([("poison", i) for i in range(n_poison)] + [("drip", i) for i in range(n_drip)]
            + [("slow", i) for i in range(n_slow)])
    plan += [("good", i) for i in range(count - len(plan))]
    rng.shuffle(plan)
    refs = []
    for index, (what, i) in enumerate(plan):
        ref_id = f"r{index:06d}"
        n = rng.randrange(pool_size)
        if what == "poison":
            name, uri, ok = forms[i % len(forms)]
            value = (MESSAGE_FORMS[name][0] if uri is None
                     else json.dumps({"id": ref_id, "uri": uri.format(n=n)}).encode())
            refs.append(Reference(ref_id, name, value, ok))
            continue
        route = {"good": "img", "slow": "slow", "drip": "drip"}[what]
        uri = f"{base}/{route}/{n}.jpg"
        expected = frozenset({dead("fetch_timeout")}) if what == "drip" else frozenset({VERDICT})
        refs.append(Reference(ref_id, what, json.dumps({"id": ref_id, "uri": uri}).encode(),
                              expected))
    return refs
