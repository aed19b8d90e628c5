"""Does the broker accept us? One blocking check before a kafka-python client is built.

kafka-python learns of a refusal (a wrong password, a certificate we do not trust, a TLS port
spoken to in plaintext) inside its bootstrap loop, which retries until its timeout and then
raises a timeout like any outage's; on TLS it can even drop the broker's "authentication failed"
answer when the broker closes the connection right after it. So before building a client we
speak the first steps ourselves on one blocking socket: TCP, the TLS handshake with the same
files, then SaslHandshake + SaslAuthenticate (the SASL exchange itself is kafka-python's own
mechanism, PLAIN or SCRAM), or ApiVersions without SASL. A refusal raises KafkaRefused with what
to check; a broker we cannot reach or that stops answering is left to the outage loop.
"""
from __future__ import annotations

import socket
import ssl
import struct

from kafka.net.sasl import get_sasl_mechanism

from worker.adapters.kafka_security import KafkaRefused, KafkaSecurity, client_options

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
TLS_ALERT = b"\x15\x03"  # the record a TLS server answers plaintext with, before closing


def probe(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """Raise KafkaRefused if the first reachable bootstrap server refuses `security`."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or "]" in port:  # no port given: kafka-python's default
            host, port = server.strip(), "9092"
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
        except OSError:
            continue  # unreachable: an outage for kafka-python's bootstrap to wait out
        with sock:
            try:
                _check(_wrap(sock, host.strip("[]"), security), security)
            except ssl.SSLError as exc:  # after the handshake (TLS 1.3): the broker's alert
                if "CERTIFICATE" in (exc.reason or ""):
                    raise KafkaRefused(f"the broker rejected our client certificate ({exc.reason})"
                                       ": check FEATDISTILL_KAFKA_CERT_FILE and "
                                       "FEATDISTILL_KAFKA_KEY_FILE") from None
            except (OSError, EOFError, struct.error):
                pass  # closed or silent mid-way: not a refusal we can name; let the client try
        return


def _wrap(sock: socket.socket, host: str, security: KafkaSecurity) -> socket.socket:
    if not security.tls:
        return sock
    context = ssl.create_default_context(cafile=security.ca_file)
    context.check_hostname = security.check_hostname
    if security.cert_file:
        context.load_cert_chain(security.cert_file, security.key_file)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaRefused(f"TLS certificate not trusted ({exc.verify_message}): check "
                           "FEATDISTILL_KAFKA_CA_FILE and FEATDISTILL_KAFKA_SSL_CHECK_HOSTNAME") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        raise EOFError from None
    except ssl.SSLError as exc:  # e.g. WRONG_VERSION_NUMBER: the port does not speak TLS
        raise KafkaRefused(f"TLS handshake failed ({exc.reason}): is this a TLS listener? check "
                           "FEATDISTILL_KAFKA_SECURITY_PROTOCOL") from None


def _check(sock: socket.socket, security: KafkaSecurity) -> None:
    if not security.sasl:
        _request(sock, API_VERSIONS, 0, b"")
        return
    body = _request(sock, SASL_HANDSHAKE, 1, _string(security.sasl_mechanism))
    error, enabled = _int16(body, 0), _strings(body, 2)
    if error or security.sasl_mechanism not in enabled:
        raise KafkaRefused(f"the broker does not offer SASL {security.sasl_mechanism} (it offers "
                           f"{', '.join(enabled) or 'none'}): check FEATDISTILL_KAFKA_SASL_MECHANISM")
    mechanism = get_sasl_mechanism(security.sasl_mechanism)(host=None, **client_options(security))
    while not mechanism.is_done():
        body = _request(sock, SASL_AUTHENTICATE, 1, _bytes(mechanism.auth_bytes()))
        error, message, offset = _int16(body, 0), *_nullable_string(body, 2)
        if error:
            raise KafkaRefused(f"SASL authentication failed ({message}): check "
                               "FEATDISTILL_KAFKA_SASL_USERNAME and FEATDISTILL_KAFKA_SASL_PASSWORD")
        mechanism.receive(body[offset + 4:offset + 4 + _int32(body, offset)])


def _request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """Send one request (header v1, client id "featdistill-probe"), return the response body."""
    correlation = 7
    message = struct.pack(">hhi", api_key, version, correlation) + _string("featdistill-probe") + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    head = _read(sock, 4)
    if head[:2] == TLS_ALERT:
        raise KafkaRefused("the broker answered in TLS: check FEATDISTILL_KAFKA_SECURITY_PROTOCOL "
                           "(SSL or SASL_SSL for this listener)")
    response = _read(sock, _int32(head, 0))
    if _int32(response, 0) != correlation:
        raise EOFError
    return response[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(raw: bytes) -> bytes:
    return struct.pack(">i", len(raw)) + raw


def _int16(data: bytes, at: int) -> int:
    return struct.unpack_from(">h", data, at)[0]


def _int32(data: bytes, at: int) -> int:
    return struct.unpack_from(">i", data, at)[0]


def _nullable_string(data: bytes, at: int) -> tuple[str, int]:
    n = _int16(data, at)
    return ("" if n < 0 else data[at + 2:at + 2 + n].decode(errors="replace")), at + 2 + max(n, 0)


def _strings(data: bytes, at: int) -> list[str]:
    count, at, out = _int32(data, at), at + 4, []
    for _ in range(count):
        text, at = _nullable_string(data, at)
        out.append(text)
    return out
