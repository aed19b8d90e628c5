"""Fetching the bytes behind an image reference (file://, http(s)://, s3://), safely.

References arrive from Kafka, so every URI is untrusted input:
- file:// reads only under the configured roots, judged on the real path (symlinks resolved), so
  neither `..` nor a symlink can reach outside them.
- http(s):// refuses hosts that resolve to internal addresses (SSRF: cloud metadata, admin ports)
  before any socket is opened, then connects to the very address it checked (no second DNS
  lookup an attacker's DNS server could answer differently) and checks every redirect again.
- s3:// goes to the endpoint the operator configured for boto3, never one named in the message.
Every source is capped at `max_bytes` while streaming, and one deadline bounds a whole fetch,
retries included, so a message cannot hold a worker longer than `total_timeout_s`.
Decoding is not done here: detector.images.decode_image turns the bytes into an image.
"""
from __future__ import annotations

import http.client
import ipaddress
import os
import random
import socket
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from worker.ports import FetchError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], list[str]]

KNOWN_SCHEMES = ("file", "http", "https", "s3")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
MAX_URI_CHARS = 8192
# Not all of these are caught by ipaddress's is_private/is_global in every Python version.
_ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10", "::/128", "::1/128",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address a NAT64 gateway reaches


@dataclass(frozen=True)
class FetchConfig:
    file_roots: tuple[str, ...] = ()  # directories file:// may read under; empty: file:// off
    allow_hosts: tuple[str, ...] = ()  # hostnames, IPs or CIDRs exempt from the address guard
    max_bytes: int = 20 * 1024 * 1024  # larger bodies are refused, early where we can tell
    connect_timeout_s: float = 3.0  # per TCP connect (and TLS handshake)
    read_timeout_s: float = 10.0  # per socket read: a stalled server
    total_timeout_s: float = 30.0  # whole fetch, retries and backoff included: a dripping one
    max_redirects: int = 3
    retries: int = 2  # extra attempts after the first, for transient failures only
    backoff_s: float = 0.2  # first retry waits about this long, doubling after
    backoff_cap_s: float = 2.0
    schemes: tuple[str, ...] = KNOWN_SCHEMES  # the subset of KNOWN_SCHEMES this worker accepts
    user_agent: str = "featdistill-fetch/0.1"


def is_blocked_address(ip: Address) -> bool:
    """True for any address that is not plainly public unicast, looking inside IPv6 forms that
    carry an IPv4 address (mapped ::ffff:a.b.c.d, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and is_blocked_address(inner):
            return True
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or not ip.is_global
            or any(ip in net for net in _ALWAYS_BLOCKED if net.version == ip.version))


def system_resolve(host: str) -> list[str]:
    # getaddrinfo has no timeout of its own; the resolver's (resolv.conf) applies.
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ImageFetcher:
    """fetch(uri) -> bytes, or FetchError. Holds no per-fetch state, so one serves many threads."""

    def __init__(self, config: FetchConfig, *, resolve: Resolve = system_resolve,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._resolve = resolve
        self._sleep = sleep
        self._rng = rng or random.Random()
        # A private CA may be passed in; the default verifies against the system trust store.
        self._ssl = ssl_context or ssl.create_default_context()
        self._allow_names, self._allow_nets = _parse_allow(config.allow_hosts)
        self._s3_client = None  # built on first s3:// use: boto3 is an optional extra

    def fetch(self, uri: str) -> bytes:
        deadline = time.monotonic() + self.config.total_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._fetch_once(uri, deadline)
            except FetchError as exc:
                exc.attempts = attempt
                delay = self._backoff(attempt)
                if (not exc.transient or attempt > self.config.retries
                        or time.monotonic() + delay >= deadline):
                    raise
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Exponential with "equal jitter": workers that failed together do not retry together.
        base = min(self.config.backoff_cap_s, self.config.backoff_s * 2 ** (attempt - 1))
        return base / 2 + self._rng.uniform(0, base / 2)

    def _fetch_once(self, uri: str, deadline: float) -> bytes:
        parts = self._parse(uri)
        if parts.scheme == "file":
            return self._read_file(parts)
        if parts.scheme == "s3":
            return self._read_s3(parts)
        return self._get_http(uri.strip(), deadline)

    def _parse(self, uri: str) -> SplitResult:
        if not isinstance(uri, str) or not uri.strip() or len(uri) > MAX_URI_CHARS:
            raise FetchError("bad_uri", f"not a usable URI: {uri!r:.200}")
        try:
            parts = urlsplit(uri.strip())
            parts.port  # raises ValueError on a malformed port
        except ValueError as exc:
            raise FetchError("bad_uri", f"{uri!r:.200}: {exc}") from exc
        if not parts.scheme:
            raise FetchError("bad_uri", f"no scheme in {uri!r:.200}")
        if parts.scheme not in KNOWN_SCHEMES or parts.scheme not in self.config.schemes:
            raise FetchError("unsupported_scheme", f"scheme {parts.scheme!r} is not accepted")
        if parts.scheme == "file" and not self.config.file_roots:
            raise FetchError("unsupported_scheme", "file:// is disabled (no file_roots)")
        if parts.scheme != "file" and not parts.hostname:
            raise FetchError("bad_uri", f"no host in {uri!r:.200}")
        return parts

    # --- file:// ---------------------------------------------------------------------------

    def _read_file(self, parts: SplitResult) -> bytes:
        if parts.netloc not in ("", "localhost"):
            raise FetchError("bad_uri", f"file:// names a remote host: {parts.netloc!r}")
        path = unquote(parts.path)
        if "\x00" in path or not os.path.isabs(path):
            raise FetchError("bad_uri", f"file:// needs an absolute path: {path!r:.200}")
        real = os.path.realpath(path)
        # Checked before existence, so probing outside the roots learns nothing.
        if not any(_is_within(real, os.path.realpath(r)) for r in self.config.file_roots):
            raise FetchError("outside_roots", f"{path!r:.200} is outside the file roots")
        try:
            # O_NOFOLLOW: a symlink swapped in after realpath is refused rather than followed.
            # O_NONBLOCK: a FIFO placed under a root cannot hang the open.
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            raise FetchError("not_found", f"{path!r:.200} does not exist") from exc
        except OSError as exc:
            raise FetchError("read_error", f"{path!r:.200}: {exc.strerror or exc}") from exc
        try:
            return self._read_fd(fd, path)
        finally:
            os.close(fd)

    def _read_fd(self, fd: int, path: str) -> bytes:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchError("not_a_file", f"{path!r:.200} is not a regular file")
        limit = self.config.max_bytes
        if info.st_size > limit:
            raise FetchError("too_large", f"{path!r:.200} is {info.st_size} bytes")
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(limit + 1)  # + 1: the file may have grown since fstat
        except OSError as exc:
            raise FetchError("read_error", f"{path!r:.200}: {exc.strerror or exc}") from exc
        if len(data) > limit:
            raise FetchError("too_large", f"{path!r:.200} is over {limit} bytes")
        return data

    # --- http(s):// -------------------------------------------------------------------------

    def _get_http(self, uri: str, deadline: float) -> bytes:
        for _ in range(self.config.max_redirects + 1):
            body, location = self._http_once(urlsplit(uri), deadline)
            if location is None:
                return body
            uri = urljoin(uri, location)
            # Only the first hop was checked by _parse; each later one is checked here.
            if urlsplit(uri).scheme not in ("http", "https"):
                raise FetchError("bad_redirect", f"redirect to a non-http URI: {uri!r:.200}")
            self._parse(uri)
        raise FetchError("too_many_redirects", f"more than {self.config.max_redirects} redirects")

    def _http_once(self, parts: SplitResult, deadline: float) -> tuple[bytes, str | None]:
        """One request: (body, None) on success, (b"", location) for a redirect."""
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        sock = self._connect(host, self._checked_addresses(host), port, deadline)
        if parts.scheme == "https":
            sock = self._tls(sock, host)
        # The connection object only writes the request (Host header included); the socket,
        # already connected to the checked address, is ours.
        conn = (http.client.HTTPSConnection(host, port, context=self._ssl)
                if parts.scheme == "https" else http.client.HTTPConnection(host, port))
        conn.sock = sock
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Non-ASCII and spaces percent-encoded as a browser would; existing escapes kept.
        target = quote(target, safe="/?&=%:@!$'()*+,;~")
        try:
            sock.settimeout(_time_left(deadline, self.config.read_timeout_s))
            conn.request("GET", target, headers={
                "User-Agent": self.config.user_agent, "Accept": "image/*, */*;q=0.5",
                "Connection": "close"})
            resp = conn.getresponse()
            if resp.status in REDIRECT_STATUSES and resp.getheader("Location"):
                return b"", resp.getheader("Location")
            if not 200 <= resp.status < 300:
                raise FetchError("http_error", f"HTTP {resp.status} from {host}", status=resp.status,
                                 transient=resp.status >= 500 or resp.status == 429)
            return self._read_body(resp, sock, deadline), None
        except ValueError as exc:  # http.client.InvalidURL, a header it will not send
            raise FetchError("bad_uri", f"{host}: {exc}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise FetchError("timeout", f"reading from {host} timed out", transient=True) from exc
        except (OSError, http.client.IncompleteRead) as exc:
            raise FetchError("connection_error", f"{host}: {exc!r:.200}", transient=True) from exc
        except http.client.HTTPException as exc:
            raise FetchError("bad_response", f"{host}: {exc!r:.200}") from exc
        finally:
            conn.close()

    def _checked_addresses(self, host: str) -> list[str]:
        """The addresses to connect to, all of them checked; refused if ANY is internal, since
        the client would otherwise pick one of them at its own choice."""
        try:
            ips = [ipaddress.ip_address(host)]  # a literal: nothing to resolve
        except ValueError:
            ips = self._resolved(host)
        if host.rstrip(".").lower() in self._allow_names:
            return [str(ip) for ip in ips]
        for ip in ips:
            if is_blocked_address(ip) and not any(ip in net for net in self._allow_nets
                                                  if net.version == ip.version):
                raise FetchError("blocked_address", f"{host} resolves to internal address {ip}")
        return [str(ip) for ip in ips]

    def _resolved(self, host: str) -> list[Address]:
        try:
            ips = [ipaddress.ip_address(a.split("%")[0]) for a in self._resolve(host)]
        except socket.gaierror as exc:
            raise FetchError("dns_error", f"cannot resolve {host}: {exc}",
                             transient=exc.errno == socket.EAI_AGAIN) from exc
        except (OSError, ValueError) as exc:
            raise FetchError("dns_error", f"cannot resolve {host}: {exc}") from exc
        if not ips:
            raise FetchError("dns_error", f"{host} resolves to no address")
        return ips

    def _connect(self, host: str, ips: list[str], port: int, deadline: float) -> socket.socket:
        """A socket to the first of the checked addresses that accepts a connection."""
        error = FetchError("connection_error", f"{host} has no address", transient=True)
        for ip in ips:
            try:
                return socket.create_connection(
                    (ip, port), timeout=_time_left(deadline, self.config.connect_timeout_s))
            except TimeoutError:
                error = FetchError("timeout", f"connecting to {host} ({ip}) timed out",
                                   transient=True)
            except OSError as exc:
                error = FetchError("connection_error", f"{host} ({ip}): {exc}", transient=True)
        raise error

    def _tls(self, sock: socket.socket, host: str) -> socket.socket:
        # The certificate is verified against the name in the URI, not the pinned address.
        try:
            return self._ssl.wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise FetchError("tls_error", f"{host}: {exc.verify_message}") from exc
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
            raise FetchError(kind, f"TLS with {host}: {exc}", transient=True) from exc

    def _read_body(self, resp: http.client.HTTPResponse, sock: socket.socket,
                   deadline: float) -> bytes:
        limit = self.config.max_bytes
        declared = resp.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError("too_large", f"Content-Length {declared} is over {limit} bytes")
        chunks, total = [], 0
        while True:
            # Every read's timeout is also capped by the deadline, so a server that sends a byte
            # just inside the read timeout still cannot stretch the fetch past it.
            sock.settimeout(_time_left(deadline, self.config.read_timeout_s))
            chunk = resp.read1(CHUNK)  # at most one socket read
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise FetchError("too_large", f"body is over {limit} bytes")
            chunks.append(chunk)

    # --- s3:// -------------------------------------------------------------------------------

    def _read_s3(self, parts: SplitResult) -> bytes:
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if not key:
            raise FetchError("bad_uri", f"s3://{bucket} names no object")
        client, errors = self._s3()
        limit = self.config.max_bytes
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
            if obj.get("ContentLength", 0) > limit:
                raise FetchError("too_large", f"s3://{bucket}/{key} is {obj['ContentLength']} B")
            try:
                data = obj["Body"].read(limit + 1)
            finally:
                obj["Body"].close()
        except errors.ClientError as exc:
            raise _s3_client_error(exc, bucket, key) from exc
        except (errors.ConnectTimeoutError, errors.ReadTimeoutError) as exc:
            raise FetchError("timeout", f"s3://{bucket}: {exc}", transient=True) from exc
        except errors.BotoCoreError as exc:
            raise FetchError("connection_error", f"s3://{bucket}: {exc}", transient=True) from exc
        if len(data) > limit:
            raise FetchError("too_large", f"s3://{bucket}/{key} is over {limit} bytes")
        return data

    def _s3(self):
        try:
            import boto3  # optional extra: pip install featdistill[s3]
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise FetchError("s3_unavailable", "s3:// needs boto3 (featdistill[s3])") from exc
        if self._s3_client is None:
            # Our own retry loop decides; botocore retrying too would multiply the attempts.
            self._s3_client = boto3.client("s3", config=botocore.config.Config(
                connect_timeout=self.config.connect_timeout_s,
                read_timeout=self.config.read_timeout_s, retries={"total_max_attempts": 1}))
        return self._s3_client, botocore.exceptions


def _s3_client_error(exc, bucket: str, key: str) -> FetchError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in ("NoSuchKey", "NoSuchBucket", "404"):
        return FetchError("not_found", f"s3://{bucket}/{key} does not exist")
    transient = status >= 500 or status == 429 or code in ("SlowDown", "Throttling")
    return FetchError("s3_error", f"s3://{bucket}/{key}: {code or status}", transient=transient,
                      status=status or None)


def _parse_allow(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple]:
    names, nets = set(), []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip(".").lower())
    return frozenset(names), tuple(nets)


def _is_within(path: str, root: str) -> bool:
    # commonpath, not startswith: /data/images2 is not inside /data/images.
    return os.path.commonpath([path, root]) == root


def _time_left(deadline: float, cap: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "total fetch deadline passed", transient=True)
    return min(cap, left)
